"""Words and prose for the benchmarks' generated mails (German and English help-desk vocabulary)."""

from __future__ import annotations

import random

WORDS = (
    "Drucker Papierstau Anmeldung Passwort gesperrt Laptop Bildschirm flackert Netzwerk VPN Zugang Rechnung "
    "Bestellung Lieferung Termin dringend bitte danke Grüße morgen heute Fehler Meldung Server Datenbank "
    "printer login password locked screen network access invoice order delivery urgent please thanks error"
).split()


def prose(rng: random.Random, size: int, *, newline: str = "\n", paragraphs: bool = True) -> str:
    """About ``size`` characters of sentences, one per line; with ``paragraphs`` a blank line after some."""
    lines, length = [], 0
    while length < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "."
        lines.append(line)
        length += len(line) + len(newline)
        if paragraphs and rng.random() < 0.2:
            lines.append("")
    return newline.join(lines)
