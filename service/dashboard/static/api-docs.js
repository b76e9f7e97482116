/* Starts Swagger UI (static/vendor/swagger-ui) on the page /api/v1/docs: the spec URL and
   options come from data attributes of the container, so the page has no inline script. */
(function () {
  "use strict";
  var container = document.getElementById("swagger-ui-container");
  var config = JSON.parse(container.dataset.config || "{}");
  config.url = container.dataset.specUrl;
  config.dom_id = "#swagger-ui-container";
  window.ui = SwaggerUIBundle(config);
})();
