"""The .k model language's Lark grammar ships here (as kcomp.grammar)."""
