"""English date formats without a trailing period.

Django's English times end in "a.m."/"p.m.", so every sentence ending with a time read
"... until 3 p.m.." (two periods). "3:00 PM" ends cleanly.
"""

DATETIME_FORMAT = "N j, Y, g:i A"
SHORT_DATETIME_FORMAT = "m/d/Y g:i A"
TIME_FORMAT = "g:i A"
