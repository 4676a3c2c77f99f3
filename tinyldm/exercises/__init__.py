"""Checkers for the lessons' exercises: call ``check_...(your_function)`` and read what it says.

One module per lesson. A checker runs the student's function on seeded inputs, compares it with the library's
version, and raises ``AssertionError`` with a hint when they differ.
"""
