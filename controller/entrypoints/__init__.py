"""Entry points: how people and programs reach diurnal. The ``diurnal`` CLI (``cli``), the
sidecar service (``service``: scrape, tick and refit jobs, the API server), the HTTP API
(``api``), the demo (``demo``, with the simulated router), ``explain`` and the terminal and
PNG heatmaps (``render``), and the OpenTelemetry SDK wiring (``tracing``).

Nothing in the loop imports from here; modules here build a :class:`~controller.Controller`
and drive it. Import the module you need (``controller.entrypoints.service``): this package
re-exports nothing, so that ``diurnal --help`` loads no server or simulator.
"""

__all__: list[str] = []
