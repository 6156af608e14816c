// The API reference at /docs: Swagger UI from the vendored bundle, on this server's own
// OpenAPI document. A file, not an inline script, so the page keeps the console's CSP.
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });
