"""The pure decision core: no I/O, no clock, no environment. Every rule lives here once."""
