"""The setup page: a small HTTPS site on the LAN that turns a phone into the setup tool.

``sessions`` (cookies, CSRF, the redemption rate limit: no I/O), ``birthday`` (a date
to a block height), ``views`` (the HTML, no I/O), ``app`` (aiohttp routes over a
:class:`~appliance.setup.app.BoxAPI`), ``service`` (the process's composition root).
See docs/setup-page.md.
"""
