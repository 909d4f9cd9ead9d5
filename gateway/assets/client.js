/* docs-gateway client: who is reading, login/logout buttons, JWT fragment hand-off, API
   playgrounds prefilled with the reader's own values. */
(function () {
  "use strict";
  var me = document.currentScript;
  var base = me && me.src ? me.src.replace(/[?#].*$/, "").replace(/\/[^\/]*$/, "") : "/_gateway";
  var mintlify = !!me && me.getAttribute("data-compat") === "mintlify";
  var state = { user: null };
  // What the gateway's config says, written in as it serves this script (identity.playgrounds).
  var settings = {"playgrounds": ["swagger-ui", "scalar"]}; // gateway:settings
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
    // The gateway writes one such tag (and puts it in place of the page's own). Another
    // one is the page's markup speaking: then none is believed, and the gateway is asked.
    if (document.querySelectorAll("script[data-user]").length !== 1) return undefined;
    try {
      var user = JSON.parse(me.getAttribute("data-user"));
      return user !== null && typeof user === "object" && !Array.isArray(user) ? user : null;
    } catch (e) { return undefined; }
  }

  var inline = inlineUser();

  /* API playgrounds (Swagger UI, Scalar) prefilled from the reader's apiPlaygroundInputs.

     Values come only from the private user object, never from the page. A value travels only
     to the reader's own server or to a server the playground's document names: any other
     request from the page that would carry one has it taken out first. */
  function Playgrounds(enabled) {
    var METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
    var inputs = null;   // the reader's values, once a reader with values is known
    var allowed = [];    // {origin, path}: where a value may be sent
    var secrets = [];    // the values the guard looks for in requests

    function on(name) { return enabled.indexOf(name) >= 0; }
    function filled(name) {
      document.dispatchEvent(new CustomEvent("docs:playground", { detail: { playground: name }, bubbles: true }));
    }
    function object(value) { return value !== null && typeof value === "object" && !Array.isArray(value) ? value : {}; }
    function list(value) { return Array.isArray(value) ? value : []; }
    function text(value) {
      return typeof value === "string" ? value : typeof value === "number" || typeof value === "boolean" ? String(value) : null;
    }
    function strings(value) {
      var out = {};
      Object.keys(object(value)).forEach(function (key) {
        var item = text(value[key]);
        if (item !== null) out[key] = item;
      });
      return out;
    }
    function named(map, name, anyCase) {
      if (typeof name !== "string") return null;
      if (Object.prototype.hasOwnProperty.call(map, name)) return map[name];
      if (!anyCase) return null;
      var keys = Object.keys(map).filter(function (key) { return key.toLowerCase() === name.toLowerCase(); });
      return keys.length ? map[keys[0]] : null;
    }
    function absolute(url, base) {
      try {
        var parsed = new URL(url, base || location.href);
        return /^https?:$/.test(parsed.protocol) ? parsed : null;
      } catch (e) { return null; }
    }

    function read(raw) {
      raw = object(raw);
      var server = raw.server, url = null, variables = {};
      if (typeof server === "string") url = server;
      else {
        variables = strings(server);
        if (typeof variables.url === "string") url = variables.url;
        delete variables.url;
      }
      var own = url === null ? null : absolute(url, "about:blank");  // only an absolute http(s) URL
      return { header: strings(raw.header), query: strings(raw.query), cookie: strings(raw.cookie),
               path: strings(raw.path), url: own ? own.href.replace(/\/$/, "") : null, variables: variables };
    }

    function allow(url, base) {
      var parsed = absolute(url, base);
      if (!parsed || /\{|%7B/i.test(parsed.pathname + parsed.host)) return;
      var path = parsed.pathname.replace(/\/+$/, "");
      if (!allowed.some(function (a) { return a.origin === parsed.origin && a.path === path; })) {
        allowed.push({ origin: parsed.origin, path: path });
      }
    }
    function permitted(url) {
      var parsed = absolute(url);
      return !!parsed && allowed.some(function (a) {
        return a.origin === parsed.origin &&
          (a.path === "" || parsed.pathname === a.path || parsed.pathname.indexOf(a.path + "/") === 0);
      });
    }

    // A server's URL with its variables filled: the reader's values where given, else the defaults.
    function expand(server, mine) {
      var variables = object(server.variables);
      return String(server.url || "").replace(/\{([^}]+)\}/g, function (whole, name) {
        if (mine && Object.prototype.hasOwnProperty.call(inputs.variables, name)) return inputs.variables[name];
        var fallback = text(object(variables[name])["default"]);
        return fallback === null ? whole : fallback;
      });
    }
    function documentServers(doc) {
      var servers = list(doc.servers).slice();
      if (!servers.length && typeof doc.openapi === "string") servers.push({ url: "/" });
      if (typeof doc.swagger === "string" && typeof doc.host === "string") {
        var scheme = list(doc.schemes)[0] || location.protocol.replace(":", "");
        servers.push({ url: scheme + "://" + doc.host + (doc.basePath || "") });
      } else if (typeof doc.swagger === "string") servers.push({ url: doc.basePath || "/" });
      Object.keys(object(doc.paths)).forEach(function (path) {
        var item = object(doc.paths[path]);
        servers = servers.concat(list(item.servers));
        METHODS.forEach(function (method) { servers = servers.concat(list(object(item[method]).servers)); });
      });
      return servers.map(object);
    }
    function allowDocument(doc, base) {
      // Only a document the docs themselves serve names servers a value may go to; one
      // fetched from elsewhere (an address a reader was handed, typed in a URL box) does not.
      var from = absolute(base);
      if (!from || from.origin !== location.origin) return;
      documentServers(doc).forEach(function (server) {
        allow(expand(server, false), base);
        allow(expand(server, true), base);
      });
    }

    // The credential the reader's values give a security scheme, or null.
    function credential(scheme) {
      scheme = object(scheme);
      var type = String(scheme.type || "").toLowerCase();
      if (type === "apikey") {
        var where = scheme["in"];
        var map = where === "header" ? inputs.header : where === "query" ? inputs.query : where === "cookie" ? inputs.cookie : {};
        var value = named(map, scheme.name, where === "header");
        return value === null ? null : { value: value };
      }
      var auth = named(inputs.header, "Authorization", true);
      if (auth === null) return null;
      var parts = /^(\S+)\s+(\S.*)$/.exec(auth);
      var kind = type === "basic" ? "basic" : type === "http" ? String(scheme.scheme || "").toLowerCase() : "";
      if (kind === "bearer") {
        if (!parts) return { token: auth };
        return /^bearer$/i.test(parts[1]) ? { token: parts[2] } : null;
      }
      if (kind === "basic" && parts && /^basic$/i.test(parts[1])) {
        try {
          var pair = atob(parts[2]);
          var colon = pair.indexOf(":");
          if (colon >= 0) return { username: pair.slice(0, colon), password: pair.slice(colon + 1) };
        } catch (e) { return null; }
      }
      return null;
    }

    // The parameter defaults: path values for path parameters, query values for query ones.
    function parameterValue(param) {
      param = object(param);
      if (param["in"] === "path") return named(inputs.path, param.name, false);
      if (param["in"] === "query") return named(inputs.query, param.name, false);
      return null;
    }
    function eachParameter(doc, visit) {
      Object.keys(object(doc.paths)).forEach(function (path) {
        var item = object(doc.paths[path]);
        METHODS.forEach(function (method) {
          if (!item[method]) return;
          list(item.parameters).concat(list(object(item[method]).parameters)).forEach(function (param) {
            param = object(param);
            if (typeof param.$ref === "string") param = local(doc, param.$ref);
            var value = parameterValue(param);
            if (value !== null) visit(path, method, param, value);
          });
        });
      });
    }
    function local(doc, ref) {
      if (ref.indexOf("#/") !== 0) return {};
      return object(ref.slice(2).split("/").reduce(function (node, key) {
        return object(node)[key.replace(/~1/g, "/").replace(/~0/g, "~")];
      }, doc));
    }

    // ---- The guard: a request to anywhere else leaves without the reader's values. ----
    // A value that is one of the reader's, or holds a long one ("Bearer <key>"); a short value
    // ("7") only as itself, so unrelated requests keep their ordinary values.
    function carries(value) {
      if (typeof value !== "string") return false;
      var bare = value.replace(/^\S+\s+/, "");
      return secrets.some(function (secret) {
        return value === secret || bare === secret || (secret.length >= 8 && value.indexOf(secret) >= 0);
      });
    }
    function stripped(url) {
      var parsed = absolute(url);
      if (!parsed) return url;
      var keep = new URLSearchParams();
      var changed = false;
      parsed.searchParams.forEach(function (value, key) {
        if (carries(value)) changed = true;
        else keep.append(key, value);
      });
      if (!changed) return url;
      parsed.search = keep.toString();
      return parsed.href;
    }
    function guard() {
      var send = window.fetch;
      if (typeof send === "function") {
        window.fetch = function (input, init) {
          var request;
          try { request = new Request(input, init); } catch (e) { return send.apply(window, arguments); }
          if (permitted(request.url)) return send.apply(window, arguments);
          var headers = new Headers(request.headers), url = stripped(request.url), dropped = [];
          headers.forEach(function (value, name) { if (carries(value)) dropped.push(name); });
          if (!dropped.length && url === request.url) return send.apply(window, arguments);
          dropped.forEach(function (name) { headers["delete"](name); });
          var bodiless = request.method === "GET" || request.method === "HEAD";
          return (bodiless ? Promise.resolve(undefined) : request.arrayBuffer()).then(function (body) {
            return send.call(window, new Request(url, {
              method: request.method, headers: headers, body: body, mode: request.mode,
              credentials: request.credentials, cache: request.cache, redirect: request.redirect,
              referrerPolicy: request.referrerPolicy, integrity: request.integrity, signal: request.signal
            }));
          });
        };
      }
      var proto = window.XMLHttpRequest && XMLHttpRequest.prototype;
      if (!proto) return;
      var targets = new WeakMap(), open = proto.open, setHeader = proto.setRequestHeader;
      proto.open = function (method, url) {
        var args = Array.prototype.slice.call(arguments);
        var target = absolute(String(url));
        if (target && !permitted(target.href)) args[1] = stripped(target.href);
        targets.set(this, target ? target.href : "");
        return open.apply(this, args);
      };
      proto.setRequestHeader = function (name, value) {
        if (!permitted(targets.get(this) || "") && carries(String(value))) return undefined;
        return setHeader.apply(this, arguments);
      };
    }

    // ---- Swagger UI 5 (swagger-ui-dist's SwaggerUIBundle, or a global `ui`). ----
    var systems = [], checks = [];
    function isSwagger(value) {
      return !!value && typeof value.preauthorizeApiKey === "function" && !!value.specSelectors &&
        !!value.authActions && typeof value.getStore === "function";
    }
    function wrapSwagger(factory) {
      if (typeof factory !== "function" || factory.docsGateway) return factory;
      var wrapped = new Proxy(factory, {
        apply: function (target, self, args) {
          var system = Reflect.apply(target, self, args);
          swagger(system);
          return system;
        },
        construct: function (target, args, newTarget) {
          var system = Reflect.construct(target, args, newTarget);
          swagger(system);
          return system;
        },
        get: function (target, key) { return key === "docsGateway" ? true : Reflect.get(target, key); }
      });
      return wrapped;
    }
    function hookSwagger() {
      var current = window.SwaggerUIBundle;
      try {
        Object.defineProperty(window, "SwaggerUIBundle", {
          configurable: true, enumerable: true,
          get: function () { return current; },
          set: function (value) { current = wrapSwagger(value); }
        });
        current = wrapSwagger(current);
      } catch (e) { /* not configurable: only a global `ui` is found */ }
    }
    function findSwagger() {
      swagger(window.ui);
      // `const ui = SwaggerUIBundle(...)` at the top of a classic script is global without being window.ui.
      try { swagger(ui); } catch (e) { /* no such global */ }
    }
    function swagger(system) {
      if (!isSwagger(system) || systems.indexOf(system) >= 0) return;
      systems.push(system);
      var last = null, widened = false;
      var check = function () {
        if (!inputs) return;
        var json = system.specSelectors.specJson();
        if (!json || !json.size || json === last) return;
        last = json;
        widened = fillSwagger(system, json.toJS(), widened);
      };
      checks.push(check);
      system.getStore().subscribe(check);
      check();
    }
    // Returns whether this playground's document has been given the reader's server.
    function fillSwagger(ui, doc, widened) {
      var base = (absolute(ui.specSelectors.url() || "") || location).href;
      var oas3 = typeof doc.openapi === "string";
      allowDocument(doc, base);
      if (oas3) {
        var servers = list(doc.servers).map(object);
        var ours = function (s) {
          var url = absolute(expand(s, true), base);
          return !!url && url.href.replace(/\/$/, "") === inputs.url;
        };
        if (!widened) {
          // The document's servers take the reader's: their variables' values become the
          // defaults, their own server joins the list, first (the dropdown shows only these).
          var changed = false;
          servers.forEach(function (s) {
            Object.keys(object(s.variables)).forEach(function (name) {
              var variable = object(s.variables[name]), value = inputs.variables[name];
              if (!Object.prototype.hasOwnProperty.call(inputs.variables, name) || text(variable["default"]) === value) return;
              variable["default"] = value;
              if (Array.isArray(variable["enum"]) && variable["enum"].indexOf(value) < 0) variable["enum"].push(value);
              changed = true;
            });
          });
          if (inputs.url && !servers.some(ours)) {
            servers.unshift({ url: inputs.url, description: "Your server" });
            changed = true;
          }
          if (changed) {
            doc.servers = servers;
            ui.specActions.updateJsonSpec(doc);
            return true;  // filled again once the document with them is in place
          }
        }
        var chosen = inputs.url ? servers.filter(ours)[0] : servers.filter(function (s) {
          return Object.keys(object(s.variables)).some(function (name) {
            return Object.prototype.hasOwnProperty.call(inputs.variables, name);
          });
        })[0];
        if (chosen) ui.oas3Actions.setSelectedServer(chosen.url);
      }
      // A playground that keeps authorisation in the browser's storage gets none: it would
      // outlive the reader's logout.
      var keeps = !!object(ui.getConfigs()).persistAuthorization;
      var schemes = keeps ? {} : oas3 ? object(object(doc.components).securitySchemes) : object(doc.securityDefinitions);
      Object.keys(schemes).forEach(function (name) {
        var found = credential(schemes[name]);
        if (!found) return;
        if ("username" in found) ui.preauthorizeBasic(name, found.username, found.password);
        else ui.preauthorizeApiKey(name, "token" in found ? found.token : found.value);
      });
      eachParameter(doc, function (path, method, param, value) {
        ui.specActions.changeParam([path, method], param.name, param["in"], value);
      });
      filled("swagger-ui");
      return widened;
    }
    // ---- Scalar's API reference (@scalar/api-reference's standalone bundle). ----
    // Scalar mounts a Vue app on its element; the configuration it renders from is reached
    // through that element, whoever created the reference and whenever.
    var configurations = new WeakSet();
    function scalarConfiguration(element) {
      var root = element._vnode && element._vnode.component;
      var tree = root && root.subTree;
      var props = tree && tree.props;
      if (!props || !tree.type || tree.type.__name !== "ApiReference") return null;
      var configuration = props.configuration;
      return configuration && typeof configuration === "object" && !Array.isArray(configuration) ? configuration : null;
    }
    function findScalar() {
      var pending = [];
      document.querySelectorAll("[data-v-app]").forEach(function (element) {
        var configuration = scalarConfiguration(element);
        if (!configuration || configurations.has(configuration)) return;
        configurations.add(configuration);
        pending.push(fillScalar(configuration));
      });
      if (pending.length) {
        Promise.all(pending).then(function (changed) {
          // Scalar picks its server when it loads a document: load it again, filled.
          if (changed.indexOf(true) < 0) return;
          document.dispatchEvent(new CustomEvent("scalar:reload-references"));
          changed.forEach(function (done) { if (done) filled("scalar"); });
        });
      }
    }
    function scalarDocument(configuration) {
      if (configuration.content !== undefined && configuration.content !== null) {
        var content = configuration.content;
        if (typeof content === "function") content = content();
        return Promise.resolve({ text: typeof content === "string" ? content : JSON.stringify(content), base: location.href });
      }
      var url = typeof configuration.url === "string" ? absolute(configuration.url) : null;
      if (!url) return Promise.resolve(null);
      return fetch(url.href, { credentials: "same-origin" }).then(function (r) {
        return r.ok ? r.text().then(function (body) { return { text: body, base: url.href }; }) : null;
      });
    }
    function fillScalar(configuration) {
      return scalarDocument(configuration).then(function (source) {
        var doc;
        try { doc = source && JSON.parse(source.text); } catch (e) { doc = null; }  // a YAML document: left as it is
        if (!doc || typeof doc !== "object" || !inputs) return false;
        allowDocument(doc, source.base);
        list(configuration.servers).forEach(function (s) { allow(expand(object(s), false), source.base); });
        // Kept in the browser's storage, a key would outlive the reader's logout: none then.
        var schemes = configuration.persistAuth ? {} : object(object(doc.components).securitySchemes), given = {};
        Object.keys(schemes).forEach(function (name) {
          var found = credential(schemes[name]);
          if (found) given[name] = found;
        });
        // Scalar sends the scheme it has selected: the first the document asks for that is filled.
        var first = list(doc.security).map(function (need) { return Object.keys(object(need)); })
          .reduce(function (all, names) { return all.concat(names); }, [])
          .concat(Object.keys(given))
          .filter(function (name) { return Object.prototype.hasOwnProperty.call(given, name); })[0] || null;
        // Relative servers are resolved against the document's own address, which the copy loses.
        var servers = list(doc.servers).map(object).map(function (s) {
          var copy = JSON.parse(JSON.stringify(s));
          var url = absolute(String(s.url || "").replace(/\{/g, "%7B").replace(/\}/g, "%7D"), source.base);
          if (url) copy.url = url.href.replace(/%7B/gi, "{").replace(/%7D/gi, "}").replace(/\/$/, "");
          Object.keys(object(copy.variables)).forEach(function (name) {
            if (Object.prototype.hasOwnProperty.call(inputs.variables, name)) copy.variables[name]["default"] = inputs.variables[name];
          });
          return copy;
        });
        if (!servers.length) servers = [{ url: absolute("/", source.base).href.replace(/\/$/, "") }];
        if (inputs.url && !servers.some(function (s) { return expand(s, true) === inputs.url; })) {
          servers.unshift({ url: inputs.url, description: "Your server" });
        }
        var chosen = inputs.url ? servers.filter(function (s) { return expand(s, true) === inputs.url; })[0] : null;
        doc.servers = servers;
        if (chosen) doc["x-scalar-selected-server"] = chosen.url;
        eachParameter(doc, function (path, method, param, value) { param.example = value; });
        var auth = object(configuration.authentication);
        configuration.authentication = Object.assign({}, auth, {
          preferredSecurityScheme: auth.preferredSecurityScheme || first,
          securitySchemes: Object.assign({}, object(auth.securitySchemes), given)
        });
        configuration.content = doc;
        delete configuration.url;
        return true;
      }).catch(function () { return false; });
    }

    // ---- Start: once the reader is known. ----
    function scan() {
      if (on("swagger-ui")) findSwagger();
      if (on("scalar")) findScalar();
    }
    if (on("swagger-ui")) hookSwagger();

    return {
      start: function (user) {
        if (!user || inputs || !enabled.length) return;
        var own = read(user.apiPlaygroundInputs);
        var values = [own.header, own.query, own.cookie].reduce(function (all, map) {
          return all.concat(Object.keys(map).map(function (key) { return map[key]; }));
        }, []);
        var token = named(own.header, "Authorization", true);
        if (token && /^\S+\s+\S/.test(token)) values.push(token.replace(/^\S+\s+/, ""));
        secrets = values.filter(function (value) { return value.length > 0; });
        if (!secrets.length && !own.url && !Object.keys(own.path).length && !Object.keys(own.variables).length) return;
        inputs = own;
        if (inputs.url) allow(inputs.url);
        guard();
        checks.forEach(function (check) { check(); });
        var pending = false;
        var later = function () {
          if (pending) return;
          pending = true;
          setTimeout(function () { pending = false; scan(); }, 0);
        };
        scan();
        new MutationObserver(later).observe(document.documentElement, {
          childList: true, subtree: true, attributes: true, attributeFilter: ["data-v-app"]
        });
      }
    };
  }

  var playgrounds = Playgrounds(settings.playgrounds || []);

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

  // The one place the reader is known: the private user object, or null for an anonymous reader.
  function whenUser(use) { ready.then(use); }

  whenUser(function (user) { playgrounds.start(user); });

  window.docsGateway = {
    get user() { return state.user; },
    login: login,
    logout: logout,
    refresh: refresh,
    ready: ready
  };
})();
