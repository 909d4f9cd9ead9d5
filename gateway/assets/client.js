/* docs-gateway client: who is reading, login/logout buttons, JWT fragment hand-off. */
(function () {
  "use strict";
  var me = document.currentScript;
  var base = me && me.src ? me.src.replace(/[?#].*$/, "").replace(/\/[^\/]*$/, "") : "/_gateway";
  var mintlify = !!me && me.getAttribute("data-compat") === "mintlify";
  var state = { user: null };
  var here = function () { return location.pathname + location.search; };

  function post(action, fields) {
    var form = document.createElement("form");
    form.method = "POST";
    form.action = action;
    form.style.display = "none";
    Object.keys(fields).forEach(function (name) {
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = fields[name];
      form.appendChild(input);
    });
    (document.body || document.documentElement).appendChild(form);
    form.submit();
  }

  function login(redirect) {
    location.href = base + "/login?redirect=" + encodeURIComponent(redirect || here());
  }

  function logout() { post(base + "/logout", {}); }

  // An id like "#v1.2.3" is not a token: the first segment must be a JSON header with "alg".
  function looksLikeJwt(text) {
    var parts = /^([\w-]+)\.[\w-]+\.[\w-]+$/.exec(text);
    if (!parts) return false;
    try {
      var json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
      return typeof JSON.parse(json).alg === "string";
    } catch (e) { return false; }
  }

  function fragmentToken() {
    var hash = location.hash.slice(1);
    if (looksLikeJwt(hash)) return { token: hash, anchor: "" };
    if (/^jwt=/.test(hash)) {
      var params = new URLSearchParams(hash);
      return { token: params.get("jwt") || "", anchor: params.get("anchor") || "" };
    }
    return null;
  }

  function lookup(user, path) {
    return path.split(".").reduce(function (value, key) {
      return value !== null && typeof value === "object" ? value[key] : undefined;
    }, user);
  }

  function fill(user) {
    if (!user) return;
    document.querySelectorAll("[data-gateway-field]").forEach(function (node) {
      var value = lookup(user, node.getAttribute("data-gateway-field"));
      if (["string", "number", "boolean"].indexOf(typeof value) >= 0) node.textContent = String(value);
    });
  }

  function announce(user) {
    state.user = user;
    window.docsUser = user;
    document.dispatchEvent(new CustomEvent("docs:user", { detail: user, bubbles: true }));
    if (mintlify) {
      window.mintlify = window.mintlify || {};
      window.mintlify.user = user ? user.content : null;
      document.dispatchEvent(new CustomEvent("mintlify:user", { detail: window.mintlify.user, bubbles: true }));
    }
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { fill(user); });
    else fill(user);
    return user;
  }

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target.closest("[data-gateway-login],[data-gateway-logout]") : null;
    if (!target) return;
    event.preventDefault();
    if (target.hasAttribute("data-gateway-logout")) logout();
    else login(target.getAttribute("data-gateway-login"));
  });

  // A fresh copy from the gateway (the one in the tag is as old as the page).
  function refresh() {
    return fetch(base + "/user", { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .catch(function () { return null; })
      .then(announce);
  }

  function inlineUser() {
    if (!me || !me.hasAttribute("data-user")) return undefined;
    try {
      var user = JSON.parse(me.getAttribute("data-user"));
      return user !== null && typeof user === "object" && !Array.isArray(user) ? user : null;
    } catch (e) { return undefined; }
  }

  var inline = inlineUser();
  var found = fragmentToken();
  var ready;
  if (found && found.token) {
    // Drop the token from the address bar and history before anything else can read it.
    history.replaceState(history.state, "", here());
    post(base + "/jwt-callback", { token: found.token, redirect: here() + (found.anchor ? "#" + found.anchor : "") });
    ready = new Promise(function () {});  // the page is being replaced
  } else if (inline !== undefined) {
    // The gateway wrote the reader's user object (null: nobody logged in) into this tag.
    ready = Promise.resolve(inline).then(announce);
  } else {
    ready = refresh();
  }

  window.docsGateway = {
    get user() { return state.user; },
    login: login,
    logout: logout,
    refresh: refresh,
    ready: ready
  };
})();
