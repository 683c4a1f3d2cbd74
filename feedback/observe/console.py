"""The page's inline style and script: what makes the server-rendered page a live console.

The script is a few kilobytes of plain JavaScript, inline (no external assets, no framework):
every `data-refresh` seconds it fetches `api/state` (with the page's own query, so the window
stays the one asked for) and swaps in each section whose tree changed. The trees are the ones
the server rendered the first paint from (feedback/observe/markup.py), rebuilt with
`createElement`/`setAttribute`/`textContent` — never `innerHTML` — and tags or attributes that
could run code (`script`, `on*`, a `href` that is not `?…`/`#…`) are dropped, so data stays data.
A chart under the pointer waits up to three polls (a tooltip is not pulled away mid-read);
a hidden tab does not poll; a failed poll keeps the last picture, says so, and backs off.

Both are pinned by hash in the page's Content-Security-Policy: nothing else may run or style it.
"""

from __future__ import annotations

import base64
import hashlib

SERIES_COLOURS = ("#1f77b4", "#7f7f7f", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
MARK_COLOURS = {"high": "#d62728", "low": "#e6a700", "critical": "#7b2cbf"}
# Event markers: a colour, a dash pattern and a glyph per kind, so each reads apart even in grey.
EVENT_STYLES = {
    "annotation": ("#ff7f0e", "none"),
    "switch": ("#9467bd", "5 3"),
    "host": ("#8c564b", "2 2"),
    "verdict": ("#17becf", "1 3"),
    "watermark": ("#b2182b", "8 3 2 3"),
    "other": ("#555555", "3 3"),
}


def _style() -> str:
    series = " ".join(f".c{i} {{ background: {c}; }}" for i, c in enumerate(SERIES_COLOURS))
    marks = " ".join(f".m-{level} {{ border-color: {c}; }}" for level, c in MARK_COLOURS.items())
    events = "\n".join(
        f"line.event-{kind} {{ stroke: {c}; stroke-dasharray: {dash}; }} .event-{kind} .glyph {{ fill: {c}; }}"
        for kind, (c, dash) in EVENT_STYLES.items()
    )
    return f"""
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.2em 2em; color: #222; background: #fff; }}
h1 {{ margin: 0 0 .2em; }} h2 {{ margin-top: 1.4em; border-bottom: 1px solid #ddd; }} h3 {{ margin: .8em 0 .2em; }}
.meta, .empty, .legend {{ color: #666; }} .legend span {{ margin-right: 1.2em; white-space: nowrap; }}
.swatch {{ display: inline-block; width: 1.4em; height: 3px; vertical-align: middle; margin-right: .3em; }}
.swatch.dashed {{ background: none; border-top-width: 2px; border-top-style: dashed; height: 0; }}
{series}
{marks}
#live {{ position: fixed; top: .4em; right: 1em; margin: 0; padding: .15em .6em; border-radius: 3px;
  background: #f3f3f3; font-size: 12px; }}
#live.ok {{ background: #e8f1fa; color: #1f4e79; }} #live.stale {{ background: #fbe9e9; color: #8b1a1a; }}
svg {{ background: #fafafa; border: 1px solid #e4e4e4; display: block; }}
svg text {{ font-size: 11px; fill: #666; }} svg text.event-n {{ font-size: 9px; fill: #333; }}
path.series {{ fill: none; stroke-width: 1.8; }}
line.watermark-high, line.watermark-low, line.threshold-high, line.threshold-low, line.threshold-critical {{
  stroke-width: 1.4; stroke-dasharray: 6 4; }}
line.event {{ stroke-width: 1.3; stroke-opacity: .85; }} line.hit {{ stroke: transparent; stroke-width: 9; }}
{events}
svg.key {{ display: inline-block; background: none; border: 0; vertical-align: middle; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 1em; }} .grid figure {{ margin: 0; }}
.grid figcaption {{ font-weight: 600; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 10px; text-align: right; vertical-align: top; }}
th {{ color: #555; }} td:first-child, th:first-child {{ text-align: left; }} td.text, th.text {{ text-align: left; }}
.held-all, .held-line, .critical, tr.breach td {{ color: #a11; }} .held-line {{ margin: 0; }}
#events, #marker-list {{ padding: 0; }} #events {{ list-style: none; }} #marker-list {{ padding-left: 2.2em; }}
#events li, #marker-list li {{ padding: 2px 0; border-bottom: 1px solid #f0f0f0; }}
#events time, #marker-list time {{ color: #666; margin-right: .6em; }} .kind {{ font-weight: 600; margin-right: .6em; }}
.who, .why {{ color: #666; margin-left: .6em; }} code {{ font-size: 12px; }}
"""


STYLE = _style()

SCRIPT = """
(function () {
  "use strict";
  var doc = document, body = doc.body, SVG = "http://www.w3.org/2000/svg";
  var every = Math.max(1, +body.getAttribute("data-refresh") || 5) * 1000;
  var polls = 0, failures = 0, idle = false, shown = {}, waited = {}, last = body.getAttribute("data-clock") || "?";
  var UNSAFE = new RegExp("^(script|style|i?frame|object|embed|link|meta|base|form|input|button|textarea|select" +
    "|foreignobject|use|image|animate|set)$", "i");
  function build(n, svg) {
    if (typeof n === "string") return doc.createTextNode(n);
    var tag = String(n[0]), inSvg = svg || tag === "svg", attrs = n[1] || {};
    if (!/^[a-z][a-z0-9]*$/i.test(tag) || UNSAFE.test(tag)) return doc.createTextNode("");
    var e = inSvg ? doc.createElementNS(SVG, tag) : doc.createElement(tag);
    Object.keys(attrs).forEach(function (k) {
      var v = String(attrs[k]);
      if (!/^[a-z][a-z0-9-]*$/i.test(k) || /^on/i.test(k) || (/href$/i.test(k) && !/^[?#]/.test(v))) return;
      e.setAttribute(k, v);
    });
    for (var i = 2; i < n.length; i++) e.appendChild(build(n[i], inSvg));
    return e;
  }
  function apply(sections) {
    var keep = {}, prev = null;
    sections.forEach(function (s) {
      var id = s[0], json = JSON.stringify(s[1]), old = doc.getElementById(id), fresh;
      keep[id] = true;
      if (old && shown[id] === json) { prev = old; return; }
      // A chart being read keeps its tooltip for up to three polls, then updates anyway.
      if (old && old.querySelector("svg:hover") && (waited[id] = (waited[id] || 0) + 1) <= 3) { prev = old; return; }
      waited[id] = 0;
      fresh = build(s[1]);
      if (old) old.replaceWith(fresh); else if (prev) prev.after(fresh); else body.appendChild(fresh);
      shown[id] = json;
      prev = fresh;
    });
    doc.querySelectorAll("[data-section]").forEach(function (e) { if (!keep[e.id]) e.remove(); });
  }
  function say(text, state) {
    var live = doc.getElementById("live");
    live.textContent = text;
    live.className = "meta " + state;
  }
  function poll() {
    if (doc.hidden) { idle = true; return; }
    fetch("api/state" + location.search, { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) return r.text().then(function (t) { throw new Error(r.status + " " + t.trim().slice(0, 200)); });
        return r.json();
      })
      .then(function (d) {
        apply(d.sections);
        polls += 1;
        failures = 0;
        last = d.clock;
        body.setAttribute("data-polls", String(polls));
        body.setAttribute("data-updated", String(d.now));
        say("live \\u00b7 updated " + last + " \\u00b7 every " + every / 1000 + " s", "ok");
      })
      .catch(function (err) {
        failures += 1;
        body.setAttribute("data-failures", String(failures));
        var why = String(err.message || err).slice(0, 200);
        say("not updated since " + last + ": " + why + " \\u00b7 retrying", "stale");
      })
      .then(function () { setTimeout(poll, every * Math.min(8, Math.pow(2, Math.min(failures, 3)))); });
  }
  doc.addEventListener("visibilitychange", function () {
    if (!doc.hidden && idle) { idle = false; poll(); }
  });
  say("live \\u00b7 every " + every / 1000 + " s", "ok");
  setTimeout(poll, every);
})();
"""


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


# Only the page's own style and script, and fetches back to the exporter; no forms, no frames.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src '{_sha256(SCRIPT)}'; style-src '{_sha256(STYLE)}'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
