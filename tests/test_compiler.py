"""Compiling descriptions: order, dependencies (declared, by name, inferred), variables."""
from __future__ import annotations

import pytest

from occo.compiler import compile_infra, merge_variables
from occo.descriptions.infra import parse_infra_description_text
from occo.descriptions.loader import load_yaml_text
from occo.descriptions.nodedefs import parse_node_definitions
from occo.errors import CompileError, SchemaError

NODEDEFS = parse_node_definitions(load_yaml_text("""
'node_def:plain':
  - resource: {type: dummy, name: first}
  - resource: {type: dummy, name: second}
'node_def:client':
  - resource: {type: dummy}
    contextualisation:
      type: cloudinit
      context_template:
        runcmd: ["curl http://{{getip(variables.target)}}/ -o /tmp/x"]
'node_def:literal':
  - resource: {type: dummy}
    contextualisation:
      type: docker
      env: ["A={{getprivip('b')}}", "{% if false %}{{getipall('c')}}{% endif %}"]
'node_def:ghost':
  - resource: {type: dummy}
    contextualisation: {type: cloudinit, context_template: "#cloud-config\\nruncmd: [ping {{getip('ghost-of-x')}}]"}
""", 'defs.yaml'), 'defs.yaml')


def compile_text(text, **kwargs):
    return compile_infra(parse_infra_description_text(text, 'infra.yaml'), NODEDEFS, **kwargs)


def test_levels_keep_description_order_within_a_level():
    graph = compile_text("""
infra_name: order
user_id: u
nodes:
  - {name: d, type: plain}
  - {name: a, type: plain}
  - {name: c, type: plain}
  - {name: b, type: plain}
dependencies:
  - [d, a]
  - connection: [b, c]
""")
    assert graph.levels == [['a', 'c'], ['d', 'b']]
    assert graph.order == ['a', 'c', 'd', 'b']
    assert graph.nodes['d'].depends_on == ['a']


def test_aliases_and_names_can_be_mixed():
    graph = compile_text("""
infra_name: mixed
nodes:
  - &A {name: a, type: plain}
  - &B {name: b, type: plain}
  - {name: c, type: plain}
dependencies:
  - [*B, *A]
  - connection: [c, *B]
    mappings: [[fqdn, db.host]]
""")
    assert graph.order == ['a', 'b', 'c']
    assert graph.edges[1].mappings == [{'attributes': ['fqdn', 'db.host'], 'synch': False}]
    assert graph.mappings('b')['outbound'] == {'c': [{'attributes': ['fqdn', 'db.host'], 'synch': False}]}


def test_inferred_dependency_from_variables_and_warning():
    graph = compile_text("""
infra_name: infer
user_id: u
nodes:
  - {name: client, type: client, variables: {target: server}}
  - {name: server, type: plain}
""")
    assert graph.order == ['server', 'client']
    [edge] = graph.edges
    assert (edge.dependent, edge.dependee, edge.inferred) == ('client', 'server', True)
    assert graph.warnings == ["node 'client' uses the address of 'server' in its templates but does not "
                              'depend on it: added the dependency [client, server]']


# node a's templates ask for b and c (see the definitions above)
ASKS_FOR_B_AND_C = """
infra_name: literal
nodes:
  - {name: a, type: literal}
  - {name: b, type: plain}
  - {name: c, type: plain}
"""


def test_literal_calls_count_even_in_branches_not_taken():
    graph = compile_text(ASKS_FOR_B_AND_C)
    assert sorted((e.dependent, e.dependee) for e in graph.edges) == [('a', 'b'), ('a', 'c')]
    assert graph.levels == [['b', 'c'], ['a']]


def test_transitive_dependency_needs_no_new_edge():
    graph = compile_text("""
infra_name: transitive
user_id: u
nodes:
  - {name: client, type: client, variables: {target: db}}
  - {name: mid, type: plain}
  - {name: db, type: plain}
dependencies: [[client, mid], [mid, db]]
""")
    assert not any(e.inferred for e in graph.edges) and graph.warnings == []


def test_address_of_unknown_node_is_an_error():
    with pytest.raises(CompileError, match="node 'x': its templates ask for the address of node 'ghost-of-x'"):
        compile_text('infra_name: g\nnodes: [{name: x, type: ghost}]\n')


def test_address_of_unknown_node_in_a_branch_not_taken_is_ignored():
    graph = compile_text('infra_name: g\nnodes: [{name: a, type: literal}, {name: b, type: plain}]\n')
    assert graph.nodes['a'].depends_on == ['b']


def test_cycle_names_its_nodes():
    with pytest.raises(SchemaError) as info:
        compile_text("""
infra_name: cyc
nodes:
  - {name: a, type: plain}
  - {name: b, type: plain}
  - {name: c, type: plain}
  - {name: free, type: plain}
dependencies: [[a, b], [b, c], [c, a]]
""")
    assert 'Cycle detected in dependencies: a -> b -> c -> a' in str(info.value)
    assert str(info.value).startswith('infra.yaml:8: ')


def test_inferred_edge_can_close_a_cycle():
    with pytest.raises(SchemaError, match=r"client -> server \(address used in client's templates\) -> client"):
        compile_text("""
infra_name: cyc2
nodes:
  - {name: client, type: client, variables: {target: server}}
  - {name: server, type: plain}
dependencies: [[server, client]]
""")


def test_filter_selects_candidates_and_missing_type_is_named():
    graph = compile_text('infra_name: f\nnodes: [{name: a, type: plain, filter: {name: second}}]\n')
    assert graph.nodes['a'].candidates == [1]
    with pytest.raises(CompileError, match=r"infra.yaml:2: node 'a': No matching node definition"):
        compile_text('infra_name: f\nnodes: [{name: a, type: plain, filter: {name: third}}]\n')
    with pytest.raises(CompileError, match="type 'nope' has no imported node definition .*imported types: "
                                           'client, ghost, literal, plain'):
        compile_text('infra_name: f\nnodes: [{name: a, type: nope}]\n')


def test_variables_merge_deeply_node_wins():
    assert merge_variables({'a': {'x': 1, 'y': 2}, 'b': 1}, {'a': {'y': 3}, 'c': 4}) == \
        {'a': {'x': 1, 'y': 3}, 'b': 1, 'c': 4}
    graph = compile_text("""
infra_name: vars
variables: {flow: {port: 1, host: h}, keep: k}
nodes: [{name: a, type: plain, variables: {flow: {port: 2}}}]
""")
    assert graph.nodes['a'].variables == {'flow': {'port': 2, 'host': 'h'}, 'keep': 'k'}


def test_scaling_limits_and_infra_id():
    graph = compile_text("""
infra_name: s
nodes:
  - {name: a, type: plain, scaling: {min: 0}}
  - {name: b, type: plain, scaling: {min: 2, max: 5}}
  - {name: c, type: plain, scaling: {min: 3}}
""", infra_id='fixed-id')
    assert graph.infra_id == 'fixed-id'
    assert [(n.scaling.min, n.scaling.max) for n in graph.nodes.values()] == [(1, 1), (2, 5), (3, 3)]


def test_graph_round_trips_through_json():
    import json
    from occo.compiler import InfraGraph
    graph = compile_text('infra_name: j\nnodes: [{name: client, type: client, variables: {target: s}}, '
                         '{name: s, type: plain}]\n')
    assert InfraGraph.from_json(json.loads(json.dumps(graph.to_json()))) == graph


def test_an_inferred_edge_counts_for_the_next_address_asked_for():
    # 'a' asks for b and c; b depends on c, so once a depends on b it depends on c too
    graph = compile_text(ASKS_FOR_B_AND_C + 'dependencies: [[b, c]]\n')
    assert [(e.dependent, e.dependee, e.inferred) for e in graph.edges] == [('b', 'c', False),
                                                                           ('a', 'b', True)]
    assert graph.warnings == ["node 'a' uses the address of 'b' in its templates but does not depend "
                              'on it: added the dependency [a, b]']
    assert graph.levels == [['c'], ['b'], ['a']]


def test_long_chains_and_wide_fan_in():
    count = 400
    nodes = ''.join(f'  - {{name: n{i}, type: plain}}\n' for i in reversed(range(count)))
    deps = ''.join(f'  - [n{i}, n{i - 1}]\n' for i in range(1, count))
    fan_in = ''.join(f'  - [all, n{i}]\n' for i in range(count)) * 2  # each given twice
    graph = compile_text(f'infra_name: chain\nnodes:\n{nodes}  - {{name: all, type: plain}}\n'
                         f'dependencies:\n{deps}{fan_in}')
    assert graph.levels == [[f'n{i}'] for i in range(count)] + [['all']]
    assert graph.nodes['all'].depends_on == [f'n{i}' for i in range(count)]
    assert graph.mappings('n0')['outbound'] == {'n1': [], 'all': []}


def test_cycle_is_named_without_the_nodes_waiting_for_it():
    with pytest.raises(SchemaError) as info:
        compile_text("""
infra_name: cyc3
nodes:
  - {name: waits, type: plain}
  - {name: a, type: plain}
  - {name: b, type: plain}
dependencies: [[waits, a], [a, b], [b, a]]
""")
    assert 'Cycle detected in dependencies: waits' not in str(info.value)
    assert 'Cycle detected in dependencies: a -> b -> a (each node depends' in str(info.value)


def test_mappings_follow_edges_added_after_a_first_look():
    from occo.compiler import Edge
    graph = compile_text('infra_name: m\nnodes: [{name: a, type: plain}, {name: b, type: plain}]\n')
    assert graph.mappings('a') == {'inbound': {}, 'outbound': {}}
    graph.edges.append(Edge('a', 'b', mappings=[{'attributes': ['x', 'y'], 'synch': False}]))
    assert graph.mappings('a')['inbound'] == {'b': [{'attributes': ['x', 'y'], 'synch': False}]}
    assert graph.mappings('b')['outbound'] == {'a': [{'attributes': ['x', 'y'], 'synch': False}]}
