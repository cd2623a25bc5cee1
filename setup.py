"""Packaging of Occopus.  Console scripts and built-in plugins are entry points."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read(*parts):
    with open(os.path.join(HERE, *parts), encoding='utf-8') as stream:
        return stream.read()


def builtin_plugins():
    """Entry points of the built-in plugins, from the one table the registry reads too."""
    namespace = {}
    exec(read('occo', 'plugins', 'builtin.py'), namespace)  # pure data, no imports
    return {group: [f'{name} = {target}' for name, target in plugins.items()]
            for group, plugins in namespace['BUILTIN_PLUGINS'].items()}


VERSION = re.search(r"__version__ = '([^']+)'", read('occo', '__init__.py')).group(1)

EXTRAS = {
    'ec2': ['boto3>=1.26'],
    'nova': ['python-novaclient>=18.0', 'keystoneauth1>=5.0'],
    'docker': ['docker>=6.0'],
    'azure': ['azure-identity>=1.15', 'azure-mgmt-compute>=30.0', 'azure-mgmt-network>=25.0',
              'azure-mgmt-resource>=23.0', 'azure-mgmt-containerinstance>=10.1'],
    'cloudbroker': ['defusedxml>=0.7'],
    'chef': ['cryptography>=41.0'],
    'mysql': ['PyMySQL>=1.0'],
    'rest': ['fastapi>=0.100', 'uvicorn>=0.22'],
    'test': ['pytest>=7.0', 'pytest-xdist>=3.0', 'moto[server]>=5.0', 'schemathesis>=4.0,<5',
             'selenium>=4.10'],
}
EXTRAS['all'] = sorted({req for name, reqs in EXTRAS.items() if name != 'test' for req in reqs})

setup(
    name='occopus',
    version=VERSION,
    description='Occopus: a hybrid-cloud orchestrator (build, maintain, scale and destroy '
                'infrastructures described in YAML)',
    long_description=read('README.rst'),
    long_description_content_type='text/x-rst',
    license='Apache-2.0',
    packages=find_packages(include=['occo', 'occo.*']),
    package_data={'occo.rest': ['static/*']},  # the status page's CSS and script
    python_requires='>=3.9',
    install_requires=['redis>=4.5', 'PyYAML>=6.0', 'Jinja2>=3.0', 'requests>=2.28',
                      'tenacity>=8.0'],
    extras_require=EXTRAS,
    entry_points=dict(builtin_plugins(), console_scripts=[
        'occopus-build = occo.cli.build:main',
        'occopus-destroy = occo.cli.destroy:main',
        'occopus-manage = occo.cli.manage:main',
        'occopus-maintain = occo.cli.manage:maintain_main',
        'occopus-scale = occo.cli.scale:main',
        'occopus-import = occo.cli.importer:main',
        'occopus-rest-service = occo.cli.rest_service:main',
    ]),
    classifiers=[
        'License :: OSI Approved :: Apache Software License',
        'Programming Language :: Python :: 3',
        'Topic :: System :: Distributed Computing',
    ],
)
