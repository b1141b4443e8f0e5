"""Each lesson's own app or data: one module per demo, imported as a module.

``from course_app.demos import news_feed`` then ``news_feed.create_app()``; a worker process
imports ``"course_app.demos.broadcast_app:app"``. Demos import ``streams``, ``services`` and
``runtime``; nothing imports a demo but lessons, tests and the ``course`` command.
"""
