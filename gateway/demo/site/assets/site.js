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

  document.addEventListener("docs:user", function (event) {
    var user = event.detail;
    show(user);
    greet(user);
  });
})();
