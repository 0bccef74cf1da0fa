"""The LSTMVis Bokeh front end: landing, select and match views over ``gpu_matcher``'s engine.

Importing this package does not import Bokeh (``lstmvis match`` must stay light); use
``bokeh_app.app.make_modify_doc(DATA_DIR)`` for embedding and notebooks, ``lstmvis serve DATA_DIR`` or
``bokeh serve bokeh_app --args DATA_DIR`` to serve.
"""
