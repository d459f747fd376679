"""The only HTTP-aware layer: REST routes, problem+json rendering, metrics, OpenAPI."""
