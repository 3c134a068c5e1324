"""The HTTP face of the service: FastAPI apps served by Mangum behind API Gateway."""
