"""Who produces and who reads each tensor of an ONNX graph, and a stable topological order.

Pure functions over ``onnx.GraphProto``; subgraph attributes (``If``/``Loop``/``Scan``) count
their outer-scope references as inputs of the node that owns them.
"""

import heapq
from collections.abc import Iterable

import onnx


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held in ``node``'s attributes (``If`` branches, ``Loop``/``Scan`` bodies)."""
    found = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            found.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            found.extend(attr.graphs)
    return found


def outer_scope_names(graph: onnx.GraphProto) -> list[str]:
    """Names a (sub)graph reads but does not define itself, in first-use order."""
    defined = {i.name for i in graph.input}
    defined.update(t.name for t in graph.initializer)
    defined.update(t.values.name for t in graph.sparse_initializer)
    for node in graph.node:
        defined.update(o for o in node.output if o)
    free: dict[str, None] = {}
    for node in graph.node:
        for name in node_inputs(node):
            if name not in defined:
                free[name] = None
    for out in graph.output:
        if out.name not in defined:
            free[out.name] = None
    return list(free)


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Every tensor ``node`` reads: its non-empty inputs, then its subgraphs' outer-scope names."""
    names = [i for i in node.input if i]
    for sub in subgraphs(node):
        names.extend(n for n in outer_scope_names(sub) if n not in names)
    return names


def producers(graph: onnx.GraphProto) -> dict[str, int]:
    """Map each node output to the index of the node producing it."""
    return {out: idx for idx, node in enumerate(graph.node) for out in node.output if out}


def consumers(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Map each tensor to the indices of the nodes reading it (subgraph references included)."""
    readers: dict[str, list[int]] = {}
    for idx, node in enumerate(graph.node):
        for name in node_inputs(node):
            readers.setdefault(name, []).append(idx)
    return readers


def constant_names(graph: onnx.GraphProto) -> set[str]:
    """Initializers (dense and sparse) of ``graph``."""
    names = {t.name for t in graph.initializer}
    names.update(t.values.name for t in graph.sparse_initializer)
    return names


def topological_order(nodes: Iterable[onnx.NodeProto]) -> list[int] | None:
    """A topological order of ``nodes`` that keeps the stored order wherever it is free to.

    Inputs produced by no node in ``nodes`` count as available from the start (graph inputs,
    initializers, outer scope). Returns ``None`` when the nodes contain a cycle.
    """
    nodes = list(nodes)
    made_by = {out: idx for idx, node in enumerate(nodes) for out in node.output if out}
    waiting = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    for idx, node in enumerate(nodes):
        deps = {made_by[name] for name in node_inputs(node) if name in made_by}
        deps.discard(idx)
        waiting[idx] = len(deps)
        for dep in deps:
            readers.setdefault(dep, []).append(idx)
    ready = [idx for idx, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        idx = heapq.heappop(ready)
        order.append(idx)
        for reader in readers.get(idx, ()):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, reader)
    return order if len(order) == len(nodes) else None


def is_topologically_sorted(graph: onnx.GraphProto) -> bool:
    """Whether every node of ``graph`` comes after the producers of everything it reads."""
    made_by = producers(graph)
    for idx, node in enumerate(graph.node):
        if any(made_by.get(name, -1) >= idx for name in node_inputs(node)):
            return False
    return True


def sort_graph(graph: onnx.GraphProto) -> bool:
    """Reorder ``graph.node`` topologically, in place. Returns False (order untouched) on a cycle."""
    order = topological_order(graph.node)
    if order is None:
        return False
    if order != list(range(len(order))):
        sorted_nodes = [onnx.NodeProto() for _ in order]
        for new, old in zip(sorted_nodes, order, strict=True):
            new.CopyFrom(graph.node[old])
        del graph.node[:]
        graph.node.extend(sorted_nodes)
    return True


def downstream_of(graph: onnx.GraphProto, sources: Iterable[str]) -> set[str]:
    """The tensors computed from any of ``sources`` (``sources`` included), through nodes and subgraphs."""
    reached = set(sources)
    nodes = graph.node
    order = topological_order(nodes)
    for idx in order if order is not None else range(len(nodes)):
        node = nodes[idx]
        if any(name in reached for name in node_inputs(node)):
            reached.update(o for o in node.output if o)
    return reached
