"""The Starlette app: routes, auth and error mapping. No business rules."""
