"""Message content inspection for defang (SPEC §4 "eom", §4a "Defang warning", §9):
:mod:`.mime` finds the MIME structure of a spooled body as byte offsets, reading it
line by line with bounded memory; :mod:`.zipscan` looks inside zip archives within
depth, member-count and size limits; :mod:`.html` removes scripts from HTML text;
:mod:`.defang` applies the ``[defang]`` rules (banned extensions, zip, attached
messages, HTML) and writes the rewritten body, copying every untouched byte as is.
"""
