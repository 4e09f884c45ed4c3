"""Outbound webhooks: Legato's events POSTed, signed, to the endpoints subscribed to them.

`signing.py` (pure: the signature scheme), `guard.py` (which URLs may be reached, and the
address to connect to), `retry.py` (pure: when the next attempt is due), `payload.py` (pure:
what is sent), `deliverer.py` (`Deliverer`: the background work that sends and logs them).
"""
