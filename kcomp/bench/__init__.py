"""`kcomp bench`: kcomp against the contenders a user would otherwise use, on their own machine.

suite.py runs the suites and writes the report; models.py holds the models (one definition serves
kcomp and Keras, since kcomp's layers take Keras's names); contenders.py the contenders and the
equality check each passes before it is timed; timing.py the clock; report.py the table, JSON and
plots. The scripts in bench/ call into this package (bench/ itself is not installed).
"""
