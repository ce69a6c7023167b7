// Bundles each widget's ES module (js/<widget>/index.js) into peap_widget/static/<widget>.js.
// CSS files are imported as text and injected by the widgets themselves, so each widget is one
// self-contained file that anywidget (or a standalone page) can load.
//   node js/build.mjs            one build
//   node js/build.mjs --watch    rebuild on change: npm run watch (hot reload with ANYWIDGET_HMR=1,
//                                docs/dev-frontend.md)
import * as esbuild from "esbuild";
import { readdirSync, existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = path.join(here, "..", "peap_widget", "static");
const widgets = readdirSync(here, { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(path.join(here, d.name, "index.js")))
  .map((d) => d.name);
const entryPoints = Object.fromEntries(widgets.map((w) => [w, path.join(here, w, "index.js")]));
entryPoints.standalone = path.join(here, "lib", "standalone.js");

const options = {
  entryPoints,
  outdir,
  bundle: true,
  format: "esm",
  target: ["es2020"],
  minify: !process.argv.includes("--dev"),
  sourcemap: false,
  loader: { ".css": "text" },
  // bundled UMD code must not register with RequireJS on exported pages
  define: { "define.amd": "false" },
  logLevel: "info",
};

if (process.argv.includes("--watch")) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
} else {
  await esbuild.build(options);
}
