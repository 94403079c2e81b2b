"""Local stand-ins and development tools, never part of a production install: the AWS
emulators, loopback servers for tests and tools, the process runner, and the `make run`
runner. Nothing in the gateway imports this package."""
