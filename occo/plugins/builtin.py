"""The built-in plugins, as entry points.  Pure data: ``setup.py`` reads this file too."""

RESOURCES = 'occo.resources'
CONFIG_MANAGERS = 'occo.configmanagers'
CONTEXTS = 'occo.contexts'

BUILTIN_PLUGINS = {
    RESOURCES: {
        'dummy': 'occo.plugins.resources.dummy:DummyHandler',
        'local': 'occo.plugins.resources.local:LocalHandler',
        'ec2': 'occo.plugins.resources.ec2:EC2Handler',
        'nova': 'occo.plugins.resources.nova:NovaHandler',
        'docker': 'occo.plugins.resources.docker:DockerHandler',
        'azure_vm': 'occo.plugins.resources.azure_vm:AzureVMHandler',
        'azure_aci': 'occo.plugins.resources.azure_aci:AzureACIHandler',
        'cloudbroker': 'occo.plugins.resources.cloudbroker:CloudBrokerHandler',
        'cloudsigma': 'occo.plugins.resources.cloudsigma:CloudSigmaHandler',
    },
    CONFIG_MANAGERS: {
        'dummy': 'occo.plugins.configmanagers.dummy:DummyConfigManager',
        'chef': 'occo.plugins.configmanagers.chef:ChefConfigManager',
        'puppet_solo': 'occo.plugins.configmanagers.puppet_solo:PuppetSoloConfigManager',
    },
    CONTEXTS: {
        'cloudinit': 'occo.plugins.contexts.cloudinit:CloudInitContext',
        'docker': 'occo.plugins.contexts.docker:DockerContext',
        'basic': 'occo.plugins.contexts.basic:BasicContext',
    },
}
