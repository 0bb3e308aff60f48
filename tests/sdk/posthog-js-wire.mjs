// Sends PostHog events the ways posthog-js does in browsers (gzip-js, base64 and lz64 forms,
// sendBeacon-style form posts, a bare array with the token in the properties), built with the real
// lz-string library, to Switchyard's capture endpoints. Prints the events it sent.
// Usage: node posthog-js-wire.mjs <switchyard base URL> <project token>
import { gzipSync } from 'node:zlib';
import LZString from 'lz-string';

const [url, token] = process.argv.slice(2);
if (!url || !token) {
  console.error('usage: node posthog-js-wire.mjs <url> <project token>');
  process.exit(2);
}

// What posthog-js puts in every event's properties.
const event = (n, name, extra = {}) => ({
  uuid: `0190a3c2-7b1e-7cc0-8f00-00000000000${n}`,
  event: name,
  timestamp: `2024-05-01T15:00:0${n}.000Z`,
  properties: {
    token,
    distinct_id: 'js-anon-1',
    $device_id: 'js-anon-1',
    $is_identified: false,
    $process_person_profile: false,
    $lib: 'web',
    $lib_version: '1.449.2',
    $session_id: 'js-session-1',
    $current_url: 'https://app.example/home',
    $pathname: '/home',
    $host: 'app.example',
    ...extra,
  },
});

const sent = [];
const post = async (path, body, headers, expect) => {
  const response = await fetch(`${url}${path}`, { method: 'POST', body, headers });
  const answer = await response.text();
  if (response.status !== 200) {
    throw new Error(`${path}: ${response.status} ${answer}`);
  }
  sent.push(...expect);
};
const form = (fields) => new URLSearchParams(fields).toString();
const formType = { 'Content-Type': 'application/x-www-form-urlencoded' };
const now = Date.now();

// 1. Current posthog-js: gzip body, compression=gzip-js in the query, text/plain.
const e1 = [event(1, '$pageview', { $title: 'Home' }), event(2, 'button clicked', { button: 'buy' })];
await post(`/e/?compression=gzip-js&ip=1&_=${now}&ver=1.449.2`, gzipSync(JSON.stringify(e1)), { 'Content-Type': 'text/plain' }, e1);
// 2. Old XHR transport: base64 JSON in a data= form.
const e2 = [event(3, '$autocapture', { $event_type: 'click' })];
await post(`/i/v0/e/?_=${now}`, form({ data: Buffer.from(JSON.stringify(e2)).toString('base64'), compression: 'base64' }), formType, e2);
// 3. Old posthog-js with lz64 compression (lz-string compressToBase64) in a data= form.
const e3 = [event(4, '$pageleave'), event(5, 'signed up', { plan: 'free', $set: { plan: 'free' } })];
await post(`/capture/?compression=lz64`, form({ data: LZString.compressToBase64(JSON.stringify(e3)), compression: 'lz64' }), formType, e3);
// 4. sendBeacon on unload: a form without a compression hint, JSON in data=.
const e4 = [event(6, '$pageleave', { $prev_pageview_pathname: '/home' })];
await post(`/track?beacon=1`, form({ data: JSON.stringify(e4) }), formType, e4);
// 5. A bare array with the token in the properties, to /batch/.
const e5 = [event(7, '$identify', { distinct_id: 'js-user-1', $anon_distinct_id: 'js-anon-1', $is_identified: true, $set: { email: 'js@example.com' } })];
await post(`/batch/`, JSON.stringify(e5), { 'Content-Type': 'application/json' }, e5);

console.log(JSON.stringify({ sdk: 'posthog-js wire formats', sent }));
