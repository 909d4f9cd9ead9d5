/* The demo site's own script: it reacts to the reader the gateway's client script announces. */
(function () {
  "use strict";

  function show(user) {
    document.querySelectorAll("[data-gateway-anonymous]").forEach(function (node) { node.hidden = !!user; });
    document.querySelectorAll("[data-gateway-authenticated]").forEach(function (node) { node.hidden = !user; });
  }

  function greet(user) {
    var hello = document.getElementById("hello");
    var name = user && user.content && user.content.firstName;
    if (hello && name) hello.textContent = "Hello, " + name;
    var dump = document.getElementById("user-json");
    if (dump) dump.textContent = JSON.stringify(user, null, 2);
  }

  // The API page: the reader's own key, from apiPlaygroundInputs, prefills the request.
  function playground(user) {
    var form = document.getElementById("playground");
    if (!form) return;
    form.addEventListener("submit", function (event) { event.preventDefault(); });
    var headers = (user && user.apiPlaygroundInputs && user.apiPlaygroundInputs.header) || {};
    var key = form.elements.authorization;
    if (headers.Authorization && !key.value) key.value = headers.Authorization;
    var render = function () {
      var lines = ["curl https://api.example.com/v1/projects"];
      if (key.value) lines.push("  -H 'Authorization: " + key.value.replace(/'/g, "") + "'");
      document.getElementById("curl").textContent = lines.join(" \\\n");
    };
    key.addEventListener("input", render);
    render();
  }

  document.addEventListener("docs:user", function (event) {
    var user = event.detail;
    show(user);
    greet(user);
    playground(user);
  });
})();
