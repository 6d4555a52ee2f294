"""The README's TensorBoard pictures: headless Chromium over a real TensorBoard server.

  python docs/screenshots.py --logdir runs/gpt2_lr [--run 'lr=3e-3'] [--out docs]

Starts `tensorboard --logdir LOGDIR` on a free port of 127.0.0.1 and Debian's `chromium`
(apt-get install chromium) headless, drives the page through the DevTools protocol (a minimal
WebSocket client below, standard library only) and writes docs/tensorboard_{timeseries,images,
custom_scalars,hparams}.png: the loss and perf charts of the Time Series tab, two attention heads
of `--run` in the Images tab at actual size, the Custom Scalars tab, the HParams table. Charts are
drawn as SVG (`?forceSVG=true`): headless Chromium without a GPU draws no WebGL lines.
"""

import argparse
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                  '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--hide-scrollbars')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _wait_for(url, timeout_s=120):
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())
    except (OSError, ValueError):
      if time.monotonic() > deadline:
        raise
      time.sleep(0.5)


class DevTools:
  """One page of Chromium over the DevTools protocol: `call(method, **params)`."""

  def __init__(self, ws_url):
    parsed = urllib.parse.urlparse(ws_url)
    self.sock = socket.create_connection((parsed.hostname, parsed.port), timeout=120)
    key = base64.b64encode(os.urandom(16)).decode()
    self.sock.sendall((f'GET {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n'
                       'Upgrade: websocket\r\nConnection: Upgrade\r\n'
                       f'Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n').encode())
    reply = b''
    while b'\r\n\r\n' not in reply:
      reply += self.sock.recv(1)
    if b' 101 ' not in reply.split(b'\r\n')[0]:
      raise RuntimeError(f'no WebSocket: {reply[:200]!r}')
    self.next_id = 0

  def _send(self, text):
    data = text.encode()
    header = bytes([0x81])
    n = len(data)
    header += (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack('>H', n)
               if n < 1 << 16 else bytes([0x80 | 127]) + struct.pack('>Q', n))
    mask = os.urandom(4)
    self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

  def _exact(self, n):
    out = b''
    while len(out) < n:
      chunk = self.sock.recv(n - len(out))
      if not chunk:
        raise ConnectionError('DevTools closed the connection')
      out += chunk
    return out

  def _receive(self):
    message = b''
    while True:
      first, second = self._exact(2)
      n = second & 0x7F
      if n == 126:
        n = struct.unpack('>H', self._exact(2))[0]
      elif n == 127:
        n = struct.unpack('>Q', self._exact(8))[0]
      message += self._exact(n)
      if first & 0x80:   # the last fragment
        return json.loads(message)

  def call(self, method, **params):
    self.next_id += 1
    self._send(json.dumps({'id': self.next_id, 'method': method, 'params': params}))
    while True:
      answer = self._receive()
      if answer.get('id') == self.next_id:
        if 'error' in answer:
          raise RuntimeError(f'{method}: {answer["error"]}')
        return answer.get('result', {})

  def js(self, expression):
    return self.call('Runtime.evaluate', expression=expression, awaitPromise=True,
                     returnByValue=True).get('result', {}).get('value')

  def open(self, url, settle_s):
    self.call('Page.navigate', url=url)
    time.sleep(settle_s)

  def screenshot(self, path):
    png = base64.b64decode(self.call('Page.captureScreenshot', format='png')['data'])
    with open(path, 'wb') as f:
      f.write(png)
    print(f'wrote {path} ({len(png):,} bytes)')


# Clicks every button of TensorBoard's page with this aria-label; returns how many.
CLICK = """(() => {{
  const buttons = [...document.querySelectorAll('button[aria-label="{label}"]')];
  buttons.forEach(b => b.click());
  return buttons.length;
}})()"""


# The Images tab's 'Show actual image size' box (a Polymer element inside shadow roots).
TICK_ACTUAL_SIZE = """(() => {
  const find = (root, out) => {
    for (const e of root.querySelectorAll('*')) {
      if (e.shadowRoot) find(e.shadowRoot, out);
      if (e.tagName === 'PAPER-CHECKBOX') out.push(e);
    }
    return out;
  };
  const box = find(document, []).find(b => b.textContent.includes('Show actual image size'));
  if (box && !box.checked) box.click();
  return Boolean(box && box.checked);
})()"""


def shoot(base, out, run, settle_s):
  """The four pictures of the README from the server at `base`."""
  port = _free_port()
  profile = tempfile.mkdtemp()
  browser = subprocess.Popen(['chromium', *CHROMIUM_FLAGS, f'--user-data-dir={profile}',
                              f'--remote-debugging-port={port}', '--window-size=1600,1000',
                              'about:blank'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    pages = _wait_for(f'http://127.0.0.1:{port}/json/list')
    page = DevTools(next(p for p in pages if p['type'] == 'page')['webSocketDebuggerUrl'])
    page.call('Page.enable')
    size = lambda w, h: page.call('Emulation.setDeviceMetricsOverride', width=w, height=h,
                                  deviceScaleFactor=1, mobile=False)
    size(1600, 1000)
    scalars = '^(train|eval)/loss$|^perf/(tokens_per_sec|mfu|packing_fill)$'
    page.open(f'{base}/?forceSVG=true&smoothing=0&tagFilter={urllib.parse.quote(scalars)}'
              '#timeseries', settle_s)
    page.js(CLICK.format(label='Close side pane'))
    time.sleep(2)
    page.screenshot(os.path.join(out, 'tensorboard_timeseries.png'))

    size(1700, 1060)   # the Images tab at actual size (the Time Series cards shrink pictures)
    maps = 'attention_maps/layer1/head[01]$'
    page.open(f'{base}/#images&tagFilter={urllib.parse.quote(maps)}'
              f'&regexInput={urllib.parse.quote(run)}', settle_s)
    page.js(TICK_ACTUAL_SIZE)
    time.sleep(3)
    page.screenshot(os.path.join(out, 'tensorboard_images.png'))

    size(1600, 1000)
    page.open(f'{base}/?forceSVG=true#custom_scalars', settle_s)
    page.screenshot(os.path.join(out, 'tensorboard_custom_scalars.png'))

    size(1600, 700)
    page.open(f'{base}/#hparams', settle_s)
    page.screenshot(os.path.join(out, 'tensorboard_hparams.png'))
  finally:
    browser.terminate()
    browser.wait(timeout=30)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.strip().split('\n')[0])
  parser.add_argument('--logdir', required=True, help='an experiment directory, e.g. runs/gpt2_lr')
  parser.add_argument('--run', default='', help='run name filter of the images picture')
  parser.add_argument('--out', default=os.path.dirname(os.path.abspath(__file__)))
  parser.add_argument('--settle_s', type=float, default=12.0, help='wait after each page load')
  args = parser.parse_args(argv)
  port = _free_port()
  tensorboard = os.path.join(os.path.dirname(sys.executable), 'tensorboard')
  server = subprocess.Popen([tensorboard, '--logdir', args.logdir, '--host', '127.0.0.1',
                             '--port', str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  try:
    _wait_for(f'http://127.0.0.1:{port}/data/runs')
    time.sleep(5)   # every run loaded
    shoot(f'http://127.0.0.1:{port}', args.out, args.run, args.settle_s)
  finally:
    server.terminate()
    server.wait(timeout=30)
  return 0


if __name__ == '__main__':
  sys.exit(main())
