// Makes the Docusaurus fixtures of tests/test_indexes_formats.py with the plugin's own code:
//
//   npm install --legacy-peer-deps @easyops-cn/docusaurus-search-local@0.55.3
//   node generate.js        (in a scratch folder; writes out/*.json)
//
// search-index.json is what the plugin's postBuild writes for four Docusaurus-shaped doc
// pages; anonymous.json, reader.json and admin.json what its buildIndex makes of the pages
// each reader may open (the team page bare: its title document only), the documents
// numbered anew from 1.
const fs = require("fs");
const path = require("path");
const base = "node_modules/@easyops-cn/docusaurus-search-local/dist/server/server/utils/";
const { postBuildFactory } = require("./" + base + "postBuildFactory");
const { buildIndex } = require("./" + base + "buildIndex");
const { validateOptions } = require("./" + base + "validateOptions");
const { processPluginOptions } = require("./" + base + "processPluginOptions");

const out = path.resolve("out");
const pages = {
  "docs/intro": ["Introduction", "Start here", "Welcome to the widget docs.", [["setup", "Setup", "Install the widget with pip."]]],
  "docs/guide": ["Guide", "", "How to use the widget every day.", [["daily", "Daily use", "Turn it on. Turn it off."]]],
  "docs/team": ["Team notes", "", "Shared notes for everyone.", [["rotation", "Key rotation", "Rotate the master key: ROTATION-SECRET."]]],
  "docs/admin": ["Admin Secret Title", "Only for admins", "ADMIN-ONLY-PAGE text about keys.", [["keys", "Master keys", "The widget master key lives here."]]],
};
for (const [route, [title, desc, intro, sections]] of Object.entries(pages)) {
  const body = sections.map(([id, h, text]) =>
    `<h2 class="anchor" id="${id}">${h}<a href="#${id}" class="hash-link" aria-hidden="true" title="Direct link">#</a></h2><p>${text}</p>`).join("");
  const html = `<!doctype html><html><head><title>${title}</title>` +
    (desc ? `<meta name="description" content="${desc}">` : "") +
    `</head><body><div class="main-wrapper"><article><div class="theme-doc-markdown markdown">` +
    `<header><h1>${title}</h1></header><p>${intro}</p>${body}</div></article></div></body></html>`;
  fs.mkdirSync(path.join(out, route), { recursive: true });
  fs.writeFileSync(path.join(out, route, "index.html"), html);
}
const options = processPluginOptions(validateOptions({
  validate: (schema, opts) => { const r = schema.validate(opts); if (r.error) throw r.error; return r.value; },
  options: { indexBlog: false, indexPages: false },
}), { siteDir: ".", siteConfig: { themeConfig: {} } });
(async () => {
  await postBuildFactory(options, "search-index{dir}.json")({
    routesPaths: ["/", "/docs/admin", "/docs/guide", "/docs/intro", "/docs/team"],
    outDir: out, baseUrl: "/", siteConfig: { trailingSlash: undefined }, plugins: [],
  });
  const full = JSON.parse(fs.readFileSync(path.join(out, "search-index.json")));
  // What the plugin writes with only these pages (bare: their title document only),
  // the documents renumbered from 1 in their order.
  const subset = (open, bare) => {
    const kept = full.map(({ documents }) => documents.filter((doc) =>
      open.includes(doc.u) || (bare.includes(doc.u) && doc.p === undefined)));
    const ids = [...new Set(kept.flat().map((doc) => doc.i))].sort((a, b) => a - b);
    const renumber = new Map(ids.map((id, n) => [id, n + 1]));
    const docs = kept.map((group) => group.map((doc) => ({ ...doc, i: renumber.get(doc.i),
      ...(doc.p === undefined ? {} : { p: renumber.get(doc.p) }) })));
    return buildIndex(docs, options);
  };
  const write = (name, data) => fs.writeFileSync(path.join(out, name), JSON.stringify(data));
  write("anonymous.json", subset(["/docs/intro"], []));
  write("reader.json", subset(["/docs/intro", "/docs/guide"], ["/docs/team"]));
  write("admin.json", subset(["/docs/intro", "/docs/guide", "/docs/admin"], ["/docs/team"]));
})();
