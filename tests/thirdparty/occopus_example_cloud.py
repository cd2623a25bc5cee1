"""A third-party resource type as a separate package would ship it: registered by an entry
point (see the ``.dist-info`` beside this file), checked and planned, but not buildable.  The
tests put this folder on ``PYTHONPATH`` to see how Occopus treats such a plugin."""
from occo.plugins.resources.base import ResourceHandler, resource_keys


class ExampleCloudHandler(ResourceHandler):
    type = 'example_cloud'
    keys = resource_keys(required=('endpoint',))
