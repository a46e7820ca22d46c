"""The operator console (``order-sync console``): server-rendered pages over the fleet's state,
the dead letters and every order's history, with actions on dead letters.

``app.create_app`` builds the Flask application; importing any module here builds nothing.
Pages: ``views.overview`` (the fleet at a glance), ``views.deadletters`` (groups, lists, one
entry), ``views.actions`` (replay, patch, archive, note, purge), ``views.history`` (an order's
history), ``views.audit`` (who did what). ``guard`` and ``auth`` keep it safe; ``backend`` is
where it reads and acts (``fleet`` and ``rates`` for the overview's figures).
"""
