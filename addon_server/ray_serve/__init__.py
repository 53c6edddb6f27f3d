"""Scale-out mode: Vigil's detector, zoo and LLM as Ray Serve deployments (issue 16).

``placement`` (the application's arguments) and ``client`` (the add-on's HTTP clients for
``BACKEND=ray``) hold no Ray import; ``app`` imports Ray Serve and is loaded by
``serve deploy`` / KubeRay on the cluster, never by the add-on itself.
"""
