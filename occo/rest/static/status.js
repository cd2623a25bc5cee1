// The Occopus status page: refreshes the server-rendered tables in place from the JSON API.
// It builds the same markup as occo/rest/page.py, with textContent only (never innerHTML):
// node names, addresses and event reasons come from users and clouds.
'use strict';

(function () {
  const REFRESH_MS = 2000;
  const EVENTS_SHOWN = 20;
  const main = document.getElementById('infrastructures');
  const status = document.getElementById('status');
  let shown = null;  // the JSON of what the tables show now

  async function getJSON(path) {
    // the page's read-only cookie (if a token is configured) goes with it: same origin only
    const answer = await fetch(path, {headers: {Accept: 'application/json'}, cache: 'no-store',
                                      credentials: 'same-origin'});
    if (!answer.ok) {
      const failure = new Error('HTTP ' + answer.status);
      failure.status = answer.status;
      throw failure;
    }
    return answer.json();
  }

  // One infrastructure as the page shows it, or null if it is gone since it was listed.
  async function infrastructure(id) {
    const base = 'infrastructures/' + encodeURIComponent(id);
    try {
      const [nodes, events] = await Promise.all([
        getJSON(base), getJSON(base + '/events?count=' + EVENTS_SHOWN)]);
      return {id: id, nodes: nodes, events: events.events.slice().reverse()};
    } catch (failure) {
      if (failure.status === 404 || failure.status === 410) return null;
      throw failure;
    }
  }

  function timeText(value) {
    const seconds = Number(value);
    if (value === undefined || value === null || value === '' || !isFinite(seconds)) {
      return value === undefined || value === null ? '' : String(value);
    }
    return new Date(seconds * 1000).toISOString().slice(0, 19).replace('T', ' ');
  }

  function addressText(address) {
    return Array.isArray(address) ? address.map(String).join(', ') : String(address || '');
  }

  function element(tag, text, attributes) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    return node;
  }

  function withCode(tag, before, code, after) {
    const node = element(tag, before);
    node.append(element('code', code), after || '');
    return node;
  }

  function holding(child) {
    const cell = element('td');
    cell.appendChild(child);
    return cell;
  }

  function headRow(titles) {
    const thead = element('thead');
    const row = thead.appendChild(element('tr'));
    for (const title of titles) row.appendChild(element('th', title, {scope: 'col'}));
    return thead;
  }

  function nodeBody(name, entry) {
    const instances = Object.entries(entry.instances);
    const span = String(Math.max(1, instances.length));
    const tbody = element('tbody', null, {'data-node': name});
    const first = tbody.appendChild(element('tr'));
    first.append(element('th', name, {scope: 'rowgroup', rowspan: span}),
                 element('td', entry.scaling.target, {rowspan: span}),
                 element('td', entry.scaling.actual, {rowspan: span}));
    if (instances.length === 0) first.append(element('td'), element('td'), element('td'));
    instances.forEach(([id, instance], index) => {
      const row = index === 0 ? first : tbody.appendChild(element('tr'));
      const state = String(instance.state);
      const label = element('span', state,
                            {class: 'state state-' + state.toLowerCase().replace(/[^a-z0-9_-]/g, '')});
      row.append(holding(element('code', id)), holding(label),
                 element('td', addressText(instance.resource_address)));
    });
    return tbody;
  }

  function section(view) {
    const part = element('section', null, {class: 'infra', 'data-infra': view.id});
    part.appendChild(withCode('h2', 'Infrastructure ', view.id));
    const nodes = part.appendChild(element('table', null, {class: 'nodes'}));
    nodes.append(element('caption', 'Nodes and instances of ' + view.id),
                 headRow(['Node', 'Target', 'Actual', 'Instance', 'State', 'Address']));
    for (const [name, entry] of Object.entries(view.nodes)) nodes.appendChild(nodeBody(name, entry));
    const events = part.appendChild(element('table', null, {class: 'events'}));
    events.append(element('caption', 'Latest events of ' + view.id + ', newest first'),
                  headRow(['Time (UTC)', 'Event', 'Node', 'Instance', 'Reason']));
    const tbody = events.appendChild(element('tbody'));
    for (const e of view.events) {
      const row = tbody.appendChild(element('tr'));
      for (const text of [timeText(e.time), e.event, e.node, e.node_id, e.reason]) {
        row.appendChild(element('td', text === undefined || text === null ? '' : text));
      }
    }
    return part;
  }

  function show(views) {
    const seen = JSON.stringify(views);
    if (seen === shown) return;
    shown = seen;
    const parts = views.map(section);
    if (parts.length === 0) parts.push(element('p', 'No infrastructures.', {class: 'empty'}));
    main.replaceChildren(...parts);
  }

  async function refresh() {
    try {
      const listed = await getJSON('infrastructures/');
      const views = await Promise.all(listed.infrastructures.map(infrastructure));
      show(views.filter(view => view !== null));
      status.textContent = 'Live: updated every ' + REFRESH_MS / 1000 + ' s, last at ' +
                           timeText(Date.now() / 1000) + ' UTC.';
      status.dataset.state = 'live';
    } catch (failure) {
      status.textContent = failure.status === 401
        ? 'Updates refused: the service wants its token (open this page once as /?token=<token>).'
        : 'Update failed (' + failure.message + '); trying again. The tables show the last data.';
      status.dataset.state = 'failed';
    }
    window.setTimeout(refresh, REFRESH_MS);
  }

  refresh();
})();
