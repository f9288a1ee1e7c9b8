"""Local stand-ins for the payment providers' HTTP APIs, as they document them."""
