"""The command line: parse, call one step, print (`main` is the `cisctool` entry point)."""
