"""``GET /docs``: the interactive page (Swagger UI) of an endpoint's ``openapi.json``.

Swagger UI's files come from the ``swagger-ui-bundle-v2`` package and are served from
here: no CDN, so the page works on Binder and on machines with no way out. Every URL the
page uses is relative, so it works at ``/docs``, ``/docs/`` and behind jupyter-server-proxy
(``/user/x/proxy/8000/docs``). When ``openapi.json`` answers 401 the page asks for the
token, keeps it in ``sessionStorage`` (a ``#token=...`` fragment fills it in too) and
sends it as ``Authorization: Bearer`` on the schema and on every "Try it out" call.
"""

from __future__ import annotations

import functools
from pathlib import Path

from starlette.responses import Response

from .. import version
from ..codec import error_reply
from ..errors import UnknownAction

__all__ = ["ASSETS", "page", "swagger_ui_version"]

#: The files the page may load, with their content types; nothing else is served.
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css.map": "application/json",
    "swagger-ui-bundle.js.map": "application/json",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
    "svckit-docs.js": "text/javascript; charset=utf-8",
}
#: Assets are named with a version in their URL (``?v=``), so a browser may keep them long.
_LONG = "public, max-age=31536000, immutable"

_SCRIPT = r"""// svckit: load the schema (with the token when it needs one) and show Swagger UI.
(function () {
  "use strict";
  // The page answers at .../docs and at .../docs/: the served root is the folder above.
  var root = new URL(location.pathname.endsWith("/") ? "../" : "./", location.href);
  var key = "svckit-token:" + root.pathname;
  var form = document.getElementById("svckit-token");
  var note = document.getElementById("svckit-note");

  function token() {
    try { return sessionStorage.getItem(key) || ""; } catch (e) { return ""; }
  }
  function keep(value) {
    try {
      if (value) { sessionStorage.setItem(key, value); } else { sessionStorage.removeItem(key); }
    } catch (e) { /* storage refused: the token lasts as long as the page */ }
    memory = value;
  }
  var memory = "";
  function current() { return token() || memory; }

  var given = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (given) {
    keep(decodeURIComponent(given[1]));
    history.replaceState(null, "", location.pathname + location.search);  // not left in the address bar
  }

  function ask(message) {
    note.textContent = message;
    form.hidden = false;
    form.elements.token.focus();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    keep(form.elements.token.value.trim());
    form.elements.token.value = "";
    load();
  });

  function load() {
    var headers = { Accept: "application/json" };
    var t = current();
    if (t) { headers.Authorization = "Bearer " + t; }
    fetch(new URL("openapi.json", root), { headers: headers, credentials: "same-origin" })
      .then(function (reply) {
        if (reply.status === 401) {
          keep("");
          ask(t ? "That token was refused: enter the service's token." : "This service needs its token.");
          return null;
        }
        if (!reply.ok) { throw new Error("openapi.json answered " + reply.status); }
        return reply.json();
      })
      .then(function (spec) {
        if (spec === null) { return; }
        form.hidden = true;
        note.textContent = "";
        show(spec);
      })
      .catch(function (error) { note.textContent = "Could not load the schema: " + error.message; });
  }

  function show(spec) {
    spec.servers = [{ url: root.href.replace(/\/$/, ""), description: "this server" }];
    if (spec.info && spec.info.title) { document.title = spec.info.title + " - docs"; }
    window.ui = SwaggerUIBundle({
      spec: spec,
      dom_id: "#swagger-ui",
      deepLinking: true,
      displayRequestDuration: true,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      requestInterceptor: function (request) {
        var t = current();
        if (t && !request.headers.Authorization) { request.headers.Authorization = "Bearer " + t; }
        return request;
      },
    });
  }

  load();
})();
"""


@functools.cache
def _folder() -> Path:
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def swagger_ui_version() -> str:
    """The version of Swagger UI the page serves (from its folder's name in the package)."""
    return _folder().name.rpartition("-")[2]


@functools.cache
def _asset(name: str) -> bytes:
    if name == "svckit-docs.js":
        return _SCRIPT.encode()
    return (_folder() / name).read_bytes()


def _html() -> str:
    stamp = f"{swagger_ui_version()}-{version.__version__}"
    # "docs/..." from /docs, "docs/docs/..." from /docs/: both are served (``page``)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>svckit - docs</title>
<link rel="stylesheet" href="docs/swagger-ui.css?v={stamp}">
<link rel="icon" type="image/png" href="docs/favicon-32x32.png?v={stamp}" sizes="32x32">
<style>
  body {{ margin: 0; font-family: sans-serif; }}
  #svckit-bar {{ padding: 8px 20px; }}
  #svckit-note:empty {{ display: none; }}
  #svckit-token input {{ width: 24em; }}
</style>
</head>
<body>
<div id="svckit-bar">
  <p id="svckit-note" role="status"></p>
  <form id="svckit-token" hidden>
    <label>Token <input name="token" type="password" autocomplete="off" placeholder="the service's token"></label>
    <button type="submit">Use token</button>
  </form>
</div>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js?v={stamp}"></script>
<script src="docs/svckit-docs.js?v={stamp}"></script>
</body>
</html>
"""


def page(rest: str, prefix: str, extra: dict[str, str]) -> Response:
    """The answer to ``GET /docs`` (``rest`` empty) or ``GET /docs/<asset>`` (``rest`` the asset).

    ``prefix`` is where the endpoint is served under a proxy (the page needs none: its URLs
    are relative); ``extra`` are headers to add (CORS). An asset not in ``ASSETS`` is a 404
    JSON error, whatever its path: nothing else of the file system is ever read.
    """
    name = rest.strip("/")
    if name.startswith("docs/"):
        name = name[len("docs/") :]  # the page at /docs/ resolves "docs/x" one folder deeper
    headers = dict(extra)
    if not name:
        headers["Cache-Control"] = "no-cache"
        return Response(_html(), media_type="text/html; charset=utf-8", headers=headers)
    kind = ASSETS.get(name)
    if kind is None:
        missing = UnknownAction(f"No file {name[:80]!r} in /docs; it serves the page and {', '.join(sorted(ASSETS))}.")
        status, body = error_reply(missing)
        return Response(body, status_code=status, media_type="application/json", headers=headers)
    headers["Cache-Control"] = _LONG
    headers["X-Content-Type-Options"] = "nosniff"
    return Response(_asset(name), media_type=kind, headers=headers)
