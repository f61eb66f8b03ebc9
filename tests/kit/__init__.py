"""The test kit: helpers shared by test modules (market generators, settings and registry fixtures, replay servers).

A test module imports helpers from here, never from another test module
(``tests/unit/test_test_kit.py`` checks it).
"""
