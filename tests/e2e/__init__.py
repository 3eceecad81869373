"""End-to-end tests: real webserver + daemon, real services, a real browser."""
