"""Fault tests (`make faults`): real Redis processes killed, frozen and restarted under load, with
every client call recorded and the history checked. Not part of `make test`."""
