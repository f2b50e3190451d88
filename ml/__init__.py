"""Model registry, preprocessing and inference.

A plain package, free of Django, shared by the Celery worker and `training/`. Only
`ml.inference` touches Keras, and only inside functions, so the web process can import the
registry without loading TensorFlow.
"""
