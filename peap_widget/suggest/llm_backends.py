"""Backends the LLM suggester talks to: anything that answers a chat.

A backend is called with a list of chat messages ``[{"role": "system"|"user"|"assistant",
"content": str}, ...]`` and returns a `Reply` (the text and, where known, the token counts).
Three kinds:

- `CallableBackend`: wraps your own function ``fn(messages) -> str`` (or ``-> Reply``); any
  plain callable given to the suggester is wrapped this way. The function receives the whole
  **message list** (not one prompt string), so a retry sees the earlier answer and the error.
- `OpenAIBackend`: an OpenAI-compatible ``POST {base_url}/chat/completions`` endpoint (OpenAI,
  vLLM, llama.cpp's server, Ollama's ``/v1``...), over the standard library's urllib.
- `TransformersBackend`: a local Hugging Face causal LM, prompted through its tokenizer's chat
  template.

Example:
    >>> echo = CallableBackend(lambda messages: '{"spans": []}', name="echo")
    >>> echo([{"role": "user", "content": "hi"}]).text
    '{"spans": []}'
    >>> api = OpenAIBackend("gpt-4o-mini")     # OPENAI_BASE_URL / OPENAI_API_KEY   # doctest: +SKIP
    >>> local = TransformersBackend(pw.models.load("toy-ioi"), truncate="left")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Union

from ..data.dataset import max_positions
from ..errors import PeapError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..runtime.model import Model

Messages = list[dict]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass
class Reply:
    """One answer: ``text``, and ``usage`` ``{"prompt_tokens": n, "completion_tokens": m}``
    where the backend reports it (``None`` where it does not)."""

    text: str
    usage: dict | None = None
    raw: dict = field(default_factory=dict, repr=False)


def check_messages(messages) -> Messages:
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise PeapError("a backend takes a list of chat messages {'role': ..., 'content': ...}")
    return messages


class CallableBackend:
    """Your function as a backend: ``fn(messages) -> str`` or ``-> Reply``.

    ``messages`` is the chat so far as a list of ``{"role", "content"}`` dicts (the first is
    the system message); return the assistant's answer text. Return a `Reply` to report token
    counts too.
    """

    def __init__(self, fn: Callable[[Messages], str | Reply], name: str | None = None):
        if not callable(fn):
            raise PeapError(f"a backend must be callable (messages -> text), got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__

    def __call__(self, messages: Messages) -> Reply:
        out = self.fn(check_messages(messages))
        if isinstance(out, Reply):
            return out
        if not isinstance(out, str):
            raise PeapError(f"the backend {self.name!r} returned {type(out).__name__}; it must "
                            "return the answer text (str) or a Reply")
        return Reply(out)


def as_backend(backend: Backend) -> CallableBackend | OpenAIBackend | TransformersBackend:
    """A backend object from a backend or a plain ``messages -> text`` callable."""
    if isinstance(backend, (CallableBackend, OpenAIBackend, TransformersBackend)):
        return backend
    return CallableBackend(backend)


class OpenAIBackend:
    """An OpenAI-compatible chat-completions endpoint.

    ``base_url`` defaults to ``$OPENAI_BASE_URL`` then ``https://api.openai.com/v1``; ``api_key``
    to ``$OPENAI_API_KEY`` (sent as ``Authorization: Bearer``; none is sent when there is no key,
    as local servers expect). The key is never printed: not in errors, not in ``repr``.
    ``extra`` adds fields to every request body (e.g. ``{"top_p": 1}``).

    HTTP errors, timeouts, unreachable hosts and replies that are not chat-completion JSON raise
    `PeapError` naming the URL and what to check.
    """

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 120.0, temperature: float | None = 0.0,
                 max_tokens: int | None = None, extra: dict | None = None):
        if not isinstance(model, str) or not model:
            raise PeapError("OpenAIBackend needs the model name the endpoint serves, e.g. "
                            "OpenAIBackend('gpt-4o-mini')")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self._key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra = dict(extra or {})
        self.name = f"openai:{model}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def __repr__(self) -> str:
        key = "set" if self._key else "none"
        return f"OpenAIBackend({self.model!r}, base_url={self.base_url!r}, api_key={key})"

    def __call__(self, messages: Messages) -> Reply:
        body = {"model": self.model, "messages": check_messages(messages), **self.extra}
        if self.temperature is not None:
            body.setdefault("temperature", self.temperature)
        if self.max_tokens is not None:
            body.setdefault("max_tokens", self.max_tokens)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"),
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            detail = _error_detail(err)
            hint = {401: "check the API key (api_key= or $OPENAI_API_KEY)",
                    403: "check the API key's permissions for this model",
                    404: "check base_url (it should end in /v1 for most servers) and the model name",
                    429: "rate limit or quota reached: wait, or lower the request rate"
                    }.get(err.code, "check the endpoint's logs and the request")
            raise PeapError(f"{self.url} answered HTTP {err.code} {err.reason}{detail}; "
                            f"{hint}") from None
        except (socket.timeout, TimeoutError):
            raise PeapError(f"{self.url} did not answer within {self.timeout} s; raise timeout= "
                            "or check that the server is up") from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise PeapError(f"{self.url} did not answer within {self.timeout} s; raise "
                                "timeout= or check that the server is up") from None
            raise PeapError(f"cannot reach {self.url}: {reason}; check base_url (or "
                            "$OPENAI_BASE_URL) and that the server is running") from None
        return self._parse(raw)

    def _parse(self, raw: bytes) -> Reply:
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            start = raw[:120].decode("utf-8", "replace")
            raise PeapError(f"{self.url} did not answer with JSON (it starts {start!r}); is "
                            "base_url a chat-completions API (e.g. http://host:port/v1)?") from None
        try:
            text = doc["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise PeapError(f"{self.url} answered JSON without choices[0].message.content "
                            f"(keys: {sorted(doc) if isinstance(doc, dict) else type(doc).__name__}); "
                            "is it an OpenAI-compatible chat-completions endpoint?") from None
        if text is None:
            text = ""
        usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else None
        if usage is not None:
            usage = {k: usage[k] for k in ("prompt_tokens", "completion_tokens")
                     if isinstance(usage.get(k), int)} or None
        return Reply(str(text), usage, doc)


def _error_detail(err) -> str:
    try:
        text = err.read().decode("utf-8", "replace").strip()
    except Exception:           # the body is only a hint; the status says enough
        return ""
    return f" ({text[:200]})" if text else ""


PLAIN_TEMPLATE_NOTE = ("no chat template: messages rendered as 'System: ...', 'User: ...', "
                       "'Assistant: ...' lines ending with 'Assistant:'")


class TransformersBackend:
    """A local Hugging Face causal LM (a `peap_widget.Model`, or an HF model with ``tokenizer=``).

    Messages go through ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``.
    A tokenizer **without a chat template** (base models, the shipped toy models) gets the plain
    fallback: one ``"System: ..."`` / ``"User: ..."`` / ``"Assistant: ..."`` line per message and
    a final ``"Assistant:"``, unless ``no_template="error"``, which raises `PeapError` instead.

    Decoding is greedy with ``max_new_tokens``. A prompt longer than the model's positions
    raises `PeapError`, unless ``truncate="left"`` keeps its last tokens (counted in
    ``truncated``). Token counts are exact (the prompt's and the generated tokens).
    """

    def __init__(self, model: Model | PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None,
                 *, max_new_tokens: int = 256,
                 no_template: str = "plain", truncate: str = "error", name: str | None = None):
        if no_template not in ("plain", "error"):
            raise PeapError(f"no_template must be 'plain' or 'error', got {no_template!r}")
        if truncate not in ("error", "left"):
            raise PeapError(f"truncate must be 'error' or 'left', got {truncate!r}")
        self.hf = getattr(model, "hf", model)
        self.tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if self.tokenizer is None or not hasattr(self.hf, "generate"):
            raise PeapError("TransformersBackend needs a causal LM with generate() and its "
                            "tokenizer (a pw.Model, or model=..., tokenizer=...)")
        self.max_new_tokens = int(max_new_tokens)
        self.no_template = no_template
        self.truncate = truncate
        self.truncated = 0
        self.last_prompt: str | list[int] | None = None
        self.name = name or f"transformers:{getattr(model, 'name', None) or type(self.hf).__name__}"

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, messages: Messages) -> list[int]:
        """The prompt token ids for ``messages`` (chat template, or the plain fallback)."""
        check_messages(messages)
        tok = self.tokenizer
        if self.has_chat_template:
            out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
            self.last_prompt = tok.decode(ids)
            return list(ids)
        if self.no_template == "error":
            raise PeapError(f"the tokenizer of {self.name} has no chat template; set "
                            "tokenizer.chat_template, use an instruction-tuned model, or pass "
                            "no_template='plain' for the plain 'User: ... Assistant:' fallback")
        text = "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages) + "\nAssistant:"
        self.last_prompt = text
        return list(tok(text)["input_ids"])

    def __call__(self, messages: Messages) -> Reply:
        import torch

        ids = self.render(messages)
        limit = max_positions(self.hf.config)
        if limit is not None and len(ids) + self.max_new_tokens > limit:
            keep = limit - self.max_new_tokens
            if self.truncate == "error" or keep < 1:
                raise PeapError(f"the prompt is {len(ids)} tokens and {self.max_new_tokens} new "
                                f"tokens are asked for, but {self.name} has {limit} positions; "
                                "use a model with a longer context, fewer examples in the prompt, "
                                "or truncate='left'")
            ids = ids[-keep:]
            self.truncated += 1
        device = next(self.hf.parameters()).device
        input_ids = torch.tensor([ids], device=device)
        pad = self.tokenizer.pad_token_id
        eos = self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.hf.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                   max_new_tokens=self.max_new_tokens, do_sample=False,
                                   pad_token_id=pad if pad is not None else eos)
        new = out[0, input_ids.shape[1]:].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Reply(text, {"prompt_tokens": len(ids), "completion_tokens": len(new)})


#: what the LLM helpers accept: a backend object, or a plain ``messages -> text`` callable
Backend = Union[CallableBackend, OpenAIBackend, TransformersBackend, Callable[[Messages], "str | Reply"]]
