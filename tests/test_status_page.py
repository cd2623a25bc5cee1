"""The status page at ``/`` of occopus-rest-service: rendered on the server (it works without
JavaScript), hostile text from users and clouds shown as text, guarded by the token, loading
nothing from elsewhere; and in Debian's headless Chromium, refreshed in place from the API
(a scale-up shows on the open page without a reload)."""
from __future__ import annotations

import json
import os
import re
import time
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import quote, urlencode

import pytest
import requests

from occo.store import Store, event
from peer_rest import RestService
from test_rest import created, nodes, ready  # noqa: F401 - nodes is a fixture

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         # a name that is not loopback never resolves: nothing can reach another host
         '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1')
HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">&amp;'
TOKEN = 'page-s3cret/token+=='  # characters a cookie must encode

#: a row of the page's tables: (infrastructure, table class, node of its tbody, cell texts)
Row = Tuple[str, str, str, List[str]]


class Rows(HTMLParser):
    """The body rows of the page's tables, as the browser test reads them from the DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: List[Row] = []
        self.infra = self.table = self.node = ''
        self.cells: Optional[List[str]] = None
        self.in_body = self.in_cell = False

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        named = dict(attrs)
        if tag == 'section':
            self.infra = named.get('data-infra') or ''
        elif tag == 'table':
            self.table = named.get('class') or ''
        elif tag == 'tbody':
            self.in_body, self.node = True, named.get('data-node') or ''
        elif tag == 'tr' and self.in_body:
            self.cells = []
        elif tag in ('td', 'th') and self.cells is not None:
            self.cells.append('')
            self.in_cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag == 'tbody':
            self.in_body = False
        elif tag == 'tr' and self.cells is not None:
            self.rows.append((self.infra, self.table, self.node, self.cells))
            self.cells = None
        elif tag in ('td', 'th'):
            self.in_cell = False

    def handle_data(self, data: str) -> None:
        if self.in_cell and self.cells is not None:
            self.cells[-1] += data


def rows_of(page: str) -> List[Row]:
    parser = Rows()
    parser.feed(page)
    parser.close()
    return parser.rows


#: the same rows, read from the live DOM
DOM_ROWS = """
return Array.from(document.querySelectorAll('section.infra tbody tr')).map(tr => [
  tr.closest('section').dataset.infra, tr.closest('table').className,
  tr.closest('tbody').dataset.node || '', Array.from(tr.cells).map(cell => cell.textContent)]);
"""


def dom_rows(chromium: Any) -> List[Row]:
    return [(infra, table, node, cells) for infra, table, node, cells in chromium.execute_script(DOM_ROWS)]


def shown_nodes(rows: List[Row], infra: str) -> Dict[str, Dict[str, Any]]:
    """node -> its target and actual counts and its instances' states and addresses, as shown."""
    result: Dict[str, Dict[str, Any]] = {}
    for row_infra, table, node, cells in rows:
        if row_infra != infra or table != 'nodes':
            continue
        if node not in result:  # the first row of a node has its name and counts
            name, target, actual, *cells = cells
            assert name == node
            result[node] = {'target': int(target), 'actual': int(actual), 'instances': {}}
        instance, state, address = cells
        result[node]['instances'][instance] = {'state': state, 'resource_address': address}
    return result


def expected_nodes(body: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The same from a ``GET /infrastructures/<id>`` body."""
    def address(value: Any) -> str:
        return ', '.join(value) if isinstance(value, list) else str(value or '')
    return {node: {'target': entry['scaling']['target'], 'actual': entry['scaling']['actual'],
                   'instances': {i: {'state': v['state'], 'resource_address': address(v['resource_address'])}
                                 for i, v in entry['instances'].items()}}
            for node, entry in body.items()}


def hostile_infrastructure(occo: Any, rest: RestService) -> Tuple[str, Dict[str, Any]]:
    """A ready dummy infrastructure with an event reason and a cloud address that are HTML;
    returns its id and ``GET`` body once the address is reported."""
    infra = created(rest)
    body = rest.wait_for(infra, ready)
    Store(occo.redis, occo.prefix).add_events(infra, [event('note', node='web', reason=HOSTILE)])
    key = f'{occo.prefix}dummycloud'
    db_id = next(iter(body['db']['instances']))
    for resource_id, raw in occo.redis.hgetall(key).items():  # the cloud tells a hostile address
        resource = json.loads(raw)
        if resource['infra_id'] == infra and resource.get('node_id') == db_id:
            occo.redis.hset(key, resource_id, json.dumps(dict(resource, addresses=[HOSTILE])))
    body = rest.wait_for(infra, lambda b: b['db']['instances'][db_id]['resource_address'] == HOSTILE)
    return infra, body


def local_references(page: str) -> List[str]:
    """Every address the page refers to; each must be one of the service's own files."""
    references = re.findall(r'(?:src|href|action)\s*=\s*"([^"]*)"', page, re.IGNORECASE)
    assert references and all(re.fullmatch(r'static/status\.(css|js)', r) for r in references), references
    assert not re.search(r'https?:|//[a-z0-9]', page.split('<main', 1)[0], re.IGNORECASE)
    return references


def test_the_page_is_rendered_on_the_server_and_escapes_what_it_shows(occo, rest, nodes):
    infra, body = hostile_infrastructure(occo, rest)
    answer = requests.get(f'{rest.url}/', timeout=30)
    assert answer.status_code == 200 and answer.headers['content-type'].startswith('text/html')
    page = answer.text
    assert "default-src 'none'" in answer.headers['content-security-policy']
    assert answer.headers['cache-control'] == 'no-store'

    rows = rows_of(page)
    assert shown_nodes(rows, infra) == expected_nodes(body)
    assert set(shown_nodes(rows, infra)) == {'db', 'web'}
    assert all(s == 'ready' for n in shown_nodes(rows, infra).values() for s in
               (i['state'] for i in n['instances'].values()))
    events = [cells for row_infra, table, _, cells in rows if row_infra == infra and table == 'events']
    assert 0 < len(events) <= 20
    assert events[0][1:] == ['note', 'web', '', HOSTILE]  # newest first, shown as text
    assert re.fullmatch(r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d', events[0][0])
    assert 'infra_created' in [cells[1] for cells in events]

    assert HOSTILE not in page and '<script>window' not in page and 'onerror="' not in page
    assert page.count(escape(HOSTILE)) == 2  # the reason and the address
    for name in local_references(page):
        served = requests.get(f'{rest.url}/{name}', timeout=30)
        assert served.status_code == 200 and not re.search(r'https?://|url\(', served.text)
    assert requests.get(f'{rest.url}/static/../app.py', timeout=30).status_code == 404
    assert requests.get(f'{rest.url}/static/page.py', timeout=30).status_code == 404
    assert '/' not in rest.call('GET', '/openapi.json').json()['paths']

    assert rest.call('DELETE', f'/infrastructures/{infra}').status_code == 200
    assert 'No infrastructures.' in requests.get(f'{rest.url}/', timeout=30).text


def test_the_page_needs_the_token_and_keeps_it_in_a_cookie(occo, nodes):
    service = RestService(occo, env={'OCCOPUS_REST_TOKEN': TOKEN}).start()
    try:
        service.token = TOKEN
        infra = created(service)
        body = service.wait_for(infra, ready)
        for path, query in (('/', None), ('/', {'token': 'wrong'}), ('/static/status.js', None),
                            ('/static/status.css', None)):
            answer = requests.get(f'{service.url}{path}', params=query, timeout=30, allow_redirects=False)
            assert answer.status_code == 401 and 'set-cookie' not in answer.headers, path
            assert infra not in answer.text and TOKEN not in answer.text
        assert '?token=' in requests.get(f'{service.url}/', timeout=30).text  # it says how
        wrong = requests.get(f'{service.url}/', timeout=30, cookies={'occopus_view': 'wrong'})
        assert wrong.status_code == 401
        as_token = requests.get(f'{service.url}/', timeout=30, cookies={'occopus_view': TOKEN})
        assert as_token.status_code == 401  # the cookie holds a derived credential, not the token

        assert shown_nodes(rows_of(service.call('GET', '/').text), infra) == expected_nodes(body)

        browser = requests.Session()
        once = browser.get(f'{service.url}/', params={'token': TOKEN}, timeout=30, allow_redirects=False)
        assert once.status_code == 303 and once.headers['location'] == './'
        cookie = once.headers['set-cookie'].lower()
        assert 'samesite=strict' in cookie and 'httponly' in cookie
        assert TOKEN.lower() not in cookie and quote(TOKEN, safe='').lower() not in cookie
        page = browser.get(f'{service.url}/', timeout=30)
        assert page.status_code == 200 and page.url == f'{service.url}/'
        assert shown_nodes(rows_of(page.text), infra) == expected_nodes(body)
        assert browser.get(f'{service.url}/static/status.js', timeout=30).status_code == 200
        # the cookie reads only: the API's GET answers take it, nothing that changes anything
        assert browser.get(f'{service.url}/infrastructures/', timeout=30).json() == {'infrastructures': [infra]}
        up = browser.post(f'{service.url}/infrastructures/{infra}/scaleup/web', timeout=30)
        assert up.status_code == 401
        assert browser.delete(f'{service.url}/infrastructures/{infra}', timeout=30).status_code == 401
        assert service.call('DELETE', f'/infrastructures/{infra}').status_code == 200
    finally:
        service.stop()
    assert TOKEN not in service.log()


# -- in headless Chromium ------------------------------------------------------------------------

@pytest.fixture(scope='session')
def chromium(tmp_path_factory) -> Iterator[Any]:
    """One headless Chromium (Debian's, through its chromedriver) for the test session."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service as DriverService

    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.skip(f'Chromium cannot start: {", ".join(missing)} missing (Debian packages chromium '
                    'and chromium-driver; .ci/install-system-deps installs them)')
    profile = tmp_path_factory.mktemp('chromium-profile')
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + (f'--user-data-dir={profile}',):
        options.add_argument(flag)
    log = Path(profile).parent / 'chromedriver.log'
    try:  # the driver's path is given, so Selenium Manager never runs (nor downloads anything)
        driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER, log_output=str(log)))
    except WebDriverException as exc:
        pytest.skip(f'Chromium cannot start here: {exc.msg}')
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(check: Any, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f'not reached in {seconds} s'
        time.sleep(0.1)


def test_the_open_page_follows_a_scale_up_without_a_reload(occo, rest, nodes, chromium):
    infra, body = hostile_infrastructure(occo, rest)
    server_rendered = rows_of(requests.get(f'{rest.url}/', timeout=30).text)
    chromium.get(f'{rest.url}/')
    wait_until(lambda: chromium.execute_script(
        "return document.getElementById('status').dataset.state") == 'live')
    rows = dom_rows(chromium)
    assert shown_nodes(rows, infra) == expected_nodes(body)
    assert [r for r in rows if r[1] == 'events'] == [r for r in server_rendered if r[1] == 'events']
    assert shown_nodes(rows, infra) == shown_nodes(server_rendered, infra)  # both render alike
    assert chromium.execute_script('return window.pwned') is None  # hostile text stays text
    assert chromium.execute_script(
        "return Array.from(document.querySelectorAll('td')).filter(td => td.textContent === arguments[0])"
        ".length", HOSTILE) == 2
    assert chromium.execute_script("return document.querySelectorAll('img, script:not([src])').length") == 0

    chromium.execute_script("window.sameDocument = 'not reloaded'")
    up = rest.call('POST', f'/infrastructures/{infra}/scaleup/web')
    assert up.status_code == 200, up.text
    shown = wait_until(lambda: two_ready_webs(shown_nodes(dom_rows(chromium), infra)))
    assert shown['web']['target'] == 2 and shown['web']['actual'] == 2
    assert shown == expected_nodes(rest.call('GET', f'/infrastructures/{infra}').json())
    assert chromium.execute_script('return window.sameDocument') == 'not reloaded'

    loaded = chromium.execute_script(
        "return performance.getEntries().map(entry => entry.name).filter(name => name.includes(':'))")
    assert loaded and all(name.startswith(f'{rest.url}/') for name in loaded), loaded

    assert rest.call('DELETE', f'/infrastructures/{infra}').status_code == 200
    wait_until(lambda: chromium.execute_script(
        "return document.querySelector('main .empty') !== null"))


def test_the_page_in_chromium_takes_the_token_once(occo, nodes, chromium):
    service = RestService(occo, env={'OCCOPUS_REST_TOKEN': TOKEN}).start()
    try:
        service.token = TOKEN
        infra = created(service)
        body = service.wait_for(infra, ready)
        chromium.get(f'{service.url}/')
        assert 'token needed' in chromium.title
        chromium.get(f'{service.url}/?' + urlencode({'token': TOKEN}))
        assert chromium.current_url == f'{service.url}/'  # the token left the address bar
        wait_until(lambda: chromium.execute_script(  # its script called the API with the token
            "return document.getElementById('status').dataset.state") == 'live')
        assert shown_nodes(dom_rows(chromium), infra) == expected_nodes(body)
        chromium.refresh()  # a reload needs no token in the address
        assert shown_nodes(rows_of(chromium.page_source), infra) == expected_nodes(body)
        assert service.call('DELETE', f'/infrastructures/{infra}').status_code == 200
    finally:
        chromium.delete_all_cookies()  # cookies ignore ports: other tests' services would get it
        service.stop()
    assert TOKEN not in service.log()


def two_ready_webs(shown: Dict[str, Dict[str, Any]]) -> Optional[Dict[str, Dict[str, Any]]]:
    webs = shown.get('web', {}).get('instances', {})
    return shown if [i['state'] for i in webs.values()] == ['ready', 'ready'] else None
