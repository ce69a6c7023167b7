"""The LLM suggester end to end: a real chat-completions HTTP server on loopback (answers from a
table this test owns), and a real local transformers model (toy-ioi)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import peap_widget as pw
from peap_widget.errors import PeapError
from peap_widget.data.schema import Schema
from peap_widget.suggest.llm import (LLMSuggester, OpenAIBackend, TransformersBackend,
                                     propose_schema)

KEY = "sk-test-0123456789"


class ChatServer:
    """POST /v1/chat/completions. The answer for a request is ``table[key][attempt - 1]`` where
    ``key`` is the table key found in the first user message and ``attempt`` the number of user
    messages; usage is ``prompt_tokens = 100 + 10 * attempt``, ``completion_tokens = len(text)``."""

    def __init__(self, table, mode="ok", delay=0.0):
        self.table, self.mode, self.delay = table, mode, delay
        self.received, self.served, self.headers = [], [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.received.append(body)
                server.headers.append(dict(self.headers))
                if server.delay:
                    time.sleep(server.delay)
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "no such route"}')
                if server.mode == "500":
                    return self._send(500, b'{"error": {"message": "model overloaded"}}')
                if server.mode == "html":
                    return self._send(200, b"<html>not an API</html>", "text/html")
                users = [m["content"] for m in body["messages"] if m["role"] == "user"]
                key = next(k for k in server.table if k in users[0])
                answers = server.table[key]
                text = answers[min(len(users), len(answers)) - 1]
                usage = {"prompt_tokens": 100 + 10 * len(users), "completion_tokens": len(text),
                         "total_tokens": 100 + 10 * len(users) + len(text)}
                server.served.append((key, len(users), text, usage))
                doc = {"id": "x", "object": "chat.completion", "model": body["model"],
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text}}],
                       "usage": usage}
                self._send(200, json.dumps(doc).encode())

            def _send(self, code, payload, ctype="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def model():
    return pw.models.load("toy-ioi")


@pytest.fixture(scope="module")
def ioi(model):
    task = pw.tasks.get("ioi", n=4, seed=3)
    ds = task.dataset(model)
    examples = [{"clean": e.clean, "corrupted": e.corrupted, "correct": e.correct,
                 "incorrect": e.incorrect} for e in ds.examples]
    tokens = [ds.tokens(i) for i in range(len(ds))]
    return ds, examples, tokens


def _words_spans(tokens, io, s):
    """IOI ABBA spans by hand from the token strings (independent of the task's char spans)."""
    i_io = tokens.index(io)
    i_s1 = tokens.index(s)
    i_s2 = len(tokens) - 1 - tokens[::-1].index(s)
    n = len(tokens)
    return {"prefix": (0, i_io), "IO": (i_io, i_io + 1), "and": (i_io + 1, i_s1),
            "S1": (i_s1, i_s1 + 1), "S1+1": (i_s1 + 1, i_s1 + 2), "action1": (i_s1 + 2, i_s2),
            "S2": (i_s2, i_s2 + 1), "action2": (i_s2 + 1, n - 1), "to": (n - 1, n)}


def test_http_end_to_end_with_retries_and_a_failure(ioi):
    ds, examples, tokens = ioi
    schema = list(ds.schema.spans)
    assert schema == ["prefix", "IO", "and", "S1", "S1+1", "action1", "S2", "action2", "to"]
    truth = [_words_spans(t, e["correct"], e["incorrect"]) for t, e in zip(tokens, examples)]
    assert [tuple(map(tuple, ex.spans)) for ex in ds.examples] == \
        [tuple(t[n] for n in schema) for t in truth]
    ranges = [json.dumps({"spans": {n: list(t[n]) for n in schema}}) for t in truth]
    starts1 = json.dumps({"spans": {n: truth[2][n][0] for n in schema}})   # paper's start form
    n3 = len(tokens[3])
    gap = dict(truth[2]);  gap["IO"] = (gap["IO"][0] + 1, gap["IO"][1])   # a hole before IO
    never = {n: list(truth[3][n]) for n in schema}
    never["action2"][1] = n3; never["to"] = [n3, n3]                       # an empty last span
    table = {examples[0]["clean"]: [ranges[0]],
             examples[1]["clean"]: ["Sure! Here are the spans: prefix, IO, ...", "```json\n"
                                    + ranges[1] + "\n```"],
             examples[2]["clean"]: [json.dumps({"spans": {n: list(gap[n]) for n in schema}}),
                                    starts1],
             examples[3]["clean"]: [json.dumps({"spans": never})]}
    seen = []
    with ChatServer(table) as srv:
        backend = OpenAIBackend("tagger-1", base_url=srv.base_url, api_key=KEY, timeout=10)
        sugg = LLMSuggester(backend, {n: f"the {n} part" for n in schema}, max_retries=2,
                            price_per_prompt_token=2e-6, price_per_completion_token=5e-6,
                            saliency=[[1, 3], [], None, [0]])
        out = sugg(examples, tokens, progress=lambda d, t, info: seen.append((d, t, info["tokens"])))

    # spans: examples 0-2 (two after a retry) as computed by hand, example 3 never validated
    for i in range(3):
        assert out.spans[i] == {n: truth[i][n] for n in schema}, i
    assert out.spans[3] is None
    assert list(out.failed) == [3]
    want = Schema(schema).validate  # the schema's own message for the never-valid answer
    with pytest.raises(pw.errors.SchemaError) as err:
        want(never, n3)
    assert out.failed[3] == str(err.value) and "rule: nonempty" in out.failed[3]
    assert out.annotated() == [0, 1, 2] and out.source == "llm:openai:tagger-1"

    # counts: requests per example 1, 2, 2, 3 -> 8 requests, 4 retries; tokens as served
    assert len(srv.received) == 8 and [a for a in out.info["attempts"]] == [1, 2, 2, 3]
    assert out.info["requests"] == 8 and out.info["retries"] == 4
    pt = sum(u["prompt_tokens"] for *_, u in srv.served)
    ct = sum(u["completion_tokens"] for *_, u in srv.served)
    assert pt == 4 * 110 + 3 * 120 + 1 * 130
    assert out.info["prompt_tokens"] == pt and out.info["completion_tokens"] == ct
    assert out.info["cost"] == pytest.approx(pt * 2e-6 + ct * 5e-6)
    assert [d for d, _, _ in seen] == [1, 2, 3, 4] and seen[-1][2] == pt + ct

    # what the server received: model, the tokens numbered, the saliency marks, the errors
    first = srv.received[0]
    assert first["model"] == "tagger-1" and first["messages"][0]["role"] == "system"
    user0 = first["messages"][1]["content"]
    for k, t in enumerate(tokens[0]):
        assert f"{k}: {t!r}" in user0
    assert f"1: {tokens[0][1]!r} *" in user0 and f"0: {tokens[0][0]!r} *" not in user0
    assert "the action2 part" in user0
    retry1 = [b for b in srv.received if examples[1]["clean"] in b["messages"][1]["content"]][1]
    assert [m["role"] for m in retry1["messages"]] == ["system", "user", "assistant", "user"]
    assert retry1["messages"][2]["content"] == table[examples[1]["clean"]][0]
    assert "not JSON" in retry1["messages"][3]["content"]
    retry2 = [b for b in srv.received if examples[2]["clean"] in b["messages"][1]["content"]][1]
    with pytest.raises(pw.errors.SchemaError) as gap_err:
        want({n: list(gap[n]) for n in schema}, len(tokens[2]))
    assert str(gap_err.value) in retry2["messages"][3]["content"]
    assert "contiguous" in str(gap_err.value)
    last = srv.received[-1]["messages"]
    assert len(last) == 6 and "rule: nonempty" in last[-1]["content"]
    assert all(h.get("Authorization") == f"Bearer {KEY}" for h in srv.headers)


def test_cost_unknown_without_prices(ioi):
    ds, examples, tokens = ioi
    schema = list(ds.schema.spans)
    truth = [_words_spans(t, e["correct"], e["incorrect"]) for t, e in zip(tokens, examples)]
    table = {e["clean"]: [json.dumps({n: list(t[n]) for n in schema})]
             for e, t in zip(examples, truth)}
    with ChatServer(table) as srv:
        out = LLMSuggester(OpenAIBackend("m", base_url=srv.base_url, api_key=""), schema,
                           show_progress=False)(examples, tokens)
    assert out.failed == {} and out.info["cost"] is None and out.info["requests"] == 4
    assert "Authorization" not in srv.headers[0]
    assert out.agreement([ex.span_dict(ds.schema) for ex in ds.examples]) == 1.0


def test_propose_schema_over_http_with_mask(ioi):
    ds, examples, tokens = ioi
    answers = ["no idea",
               json.dumps({"spans": [{"title": "names", "description": "the two names"},
                                     {"title": "names", "description": "dup"}]}),
               json.dumps({"spans": [{"title": "context", "description": "everything before"},
                                     {"title": "to", "description": "the last token"}]})]
    key = "prompts a language model completes"
    with ChatServer({key: answers}) as srv:
        p = propose_schema(OpenAIBackend("m", base_url=srv.base_url), examples, tokens,
                           saliency=[[0], [1], [2], [3]], n_sample=3, max_retries=2)
    assert p.titles == ["context", "to"] and p.descriptions["to"] == "the last token"
    assert p.info["requests"] == 3 and p.info["retries"] == 2 and len(p.sample) == 3
    user = srv.received[0]["messages"][1]["content"]
    for i in p.sample:
        assert examples[i]["clean"] in user and f"{i}: {tokens[i][i]!r} *" in user
    assert "unique" in srv.received[2]["messages"][-1]["content"]      # the schema rule's words
    with ChatServer({key: ["still no idea"]}) as srv:
        with pytest.raises(PeapError, match="no valid schema in 2 attempts"):
            propose_schema(OpenAIBackend("m", base_url=srv.base_url), examples, tokens,
                           max_retries=1)


@pytest.mark.parametrize("mode, match", [("500", r"HTTP 500.*model overloaded"),
                                         ("html", "did not answer with JSON"),
                                         ("slow", "did not answer within 0.3 s"),
                                         ("route", "HTTP 404.*base_url")])
def test_http_errors_name_the_url_and_hide_the_key(ioi, mode, match):
    _, examples, tokens = ioi
    with ChatServer({"": ["{}"]}, mode=mode, delay=1.0 if mode == "slow" else 0) as srv:
        base = srv.base_url + ("/nope" if mode == "route" else "")
        backend = OpenAIBackend("m", base_url=base, api_key=KEY, timeout=0.3)
        with pytest.raises(PeapError, match=match) as err:
            LLMSuggester(backend, ["a", "b"], show_progress=False)(examples[:1], tokens[:1])
    assert base + "/chat/completions" in str(err.value) and KEY not in str(err.value)
    assert KEY not in repr(backend)


def test_unreachable_and_environment(monkeypatch):
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    b = OpenAIBackend("m", timeout=2)
    assert b.base_url == f"http://127.0.0.1:{port}/v1" and KEY not in repr(b)
    with pytest.raises(PeapError, match="cannot reach .*127.0.0.1") as err:
        b([{"role": "user", "content": "hi"}])
    assert KEY not in str(err.value)


def test_callable_backend_gets_messages():
    got = []

    def fn(messages):
        got.append(messages)
        return '{"spans": {"body": [0, 1], "end": [1, 2]}}'

    out = LLMSuggester(fn, ["body", "end"], show_progress=False)(
        [{"clean": "a b", "salient": [1]}], [["a", "b"]])
    assert out.spans == [{"body": (0, 1), "end": (1, 2)}]
    user = got[0][1]["content"]
    assert got[0][0]["role"] == "system" and "0: 'a'\n1: 'b' *" in user   # the record's mask
    # no usage reported: token counts stay 0 and the cost is unknown, even with prices
    out = LLMSuggester(fn, ["body", "end"], price_per_prompt_token=1.0,
                       price_per_completion_token=1.0, show_progress=False)([{}], [["a", "b"]])
    assert out.info["requests_without_usage"] == 1 and out.info["cost"] is None


def test_local_transformers_model_is_retried_and_reported(model, ioi):
    _, examples, tokens = ioi
    backend = TransformersBackend(model, max_new_tokens=3, truncate="left")
    assert not backend.has_chat_template
    out = LLMSuggester(backend, ["context", "to"], max_retries=1, show_progress=False)(
        examples[:2], tokens[:2])
    # the toy model does not write JSON: both examples fail after 2 attempts each
    assert out.spans == [None, None] and sorted(out.failed) == [0, 1]
    assert all("not JSON" in e or "answer is empty" in e for e in out.failed.values())
    assert out.info["requests"] == 4 and out.info["retries"] == 2
    assert out.info["truncated_prompts"] == 4         # the prompts exceed its 64 positions
    assert out.info["prompt_tokens"] == 4 * (64 - 3)
    assert 0 < out.info["completion_tokens"] <= 4 * 3
    assert backend.last_prompt.startswith("System: ") and backend.last_prompt.endswith("Assistant:")
    with pytest.raises(PeapError, match="has 64 positions"):
        TransformersBackend(model, max_new_tokens=3)([{"role": "user", "content": "a " * 80}])
    with pytest.raises(PeapError, match="no chat template"):
        TransformersBackend(model, no_template="error")([{"role": "user", "content": "hi"}])


def test_local_model_with_a_chat_template(model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(pw.models.path("toy-ioi")))
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} , "
                         "{% endfor %}{% if add_generation_prompt %}assistant :{% endif %}")
    backend = TransformersBackend(model, tok, max_new_tokens=2)
    reply = backend([{"role": "user", "content": "Mary and John"}])
    assert backend.has_chat_template and "Mary and John" in backend.last_prompt
    ids = tok("user : Mary and John , assistant :")["input_ids"]
    assert reply.usage["prompt_tokens"] == len(ids) and 1 <= reply.usage["completion_tokens"] <= 2
