"""The HTTP API behind API Gateway: request/response bodies, the service the routes call, and how errors
become HTTP answers. The predict function's handler only declares the routes."""
