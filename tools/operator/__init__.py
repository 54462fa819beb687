"""The operator's side of a running `taskledger run`: an HTTP API, a live web view, `ctl`.

handle.py   what they need from a running scheduler (a small interface, and its adapter
            over engine.mesos.runtime.Runtime)
orders.py   the operator's orders (resume, reconcile, kill, scale, dry run) as events
live.py     the log folded in the server's own thread, and the documents built from it
server.py   the aiohttp application on its own thread: routes, tokens, the pages
client.py   the HTTP client `taskledger ctl` uses
ctl.py      `taskledger ctl`
static/     the pages' HTML, CSS and JavaScript (served from here: nothing from the
            internet)
"""
