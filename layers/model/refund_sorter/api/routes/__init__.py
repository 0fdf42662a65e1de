"""The API's routes, one Powertools ``Router`` per resource; :func:`refund_sorter.api.app.build_app` includes
them all. A route only translates HTTP to one :class:`~refund_sorter.api.service.PredictionService` call."""
