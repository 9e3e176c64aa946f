"""API tests over real HTTP against tests/api/fakeapi.py."""
