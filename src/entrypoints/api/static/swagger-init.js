// Starts Swagger UI on /api-docs. A file of its own, not an inline script, so that the page
// works under a Content-Security-Policy of script-src 'self'. The document is found from this
// script's own URL (/api-docs/static/ -> /api-docs/openapi.json).
"use strict";
(function () {
  var here = document.currentScript.src;
  window.ui = SwaggerUIBundle({
    url: new URL("../openapi.json", here).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis],
    // no badge from validator.swagger.io: the page asks nothing of another origin
    validatorUrl: null,
  });
})();
