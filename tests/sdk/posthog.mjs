// Sends every PostHog call (capture, identify, alias, groupIdentify, $pageview, $screen) through the
// real posthog-node SDK to Switchyard, and prints the exact payloads posthog-node sent, so
// tests/tests/sdk_compat.rs can compare them with what Switchyard stored and forwarded.
// Usage: node posthog.mjs <switchyard base URL> <project token>
import { gunzipSync } from 'node:zlib';
import { PostHog } from 'posthog-node';

const [url, token] = process.argv.slice(2);
if (!url || !token) {
  console.error('usage: node posthog.mjs <url> <project token>');
  process.exit(2);
}

// Record every request body (posthog-node gzips them) on its way to Switchyard.
const requests = [];
const recordingFetch = async (input, init) => {
  const raw = Buffer.from(await new Response(init.body).arrayBuffer());
  const encoding = Object.entries(init.headers ?? {}).find(([k]) => k.toLowerCase() === 'content-encoding');
  const text = encoding && encoding[1] === 'gzip' ? gunzipSync(raw).toString('utf8') : raw.toString('utf8');
  const response = await fetch(input, { ...init, body: raw });
  requests.push({ url: String(input), gzip: Boolean(encoding), status: response.status, body: JSON.parse(text) });
  return response;
};

let failed = false;
const client = new PostHog(token, { host: url, flushAt: 50, flushInterval: 0, fetch: recordingFetch });
client.on('error', (error) => {
  failed = true;
  console.error('posthog-node error:', error?.message ?? error);
});

client.capture({
  distinctId: 'ph-user-1',
  event: 'Order Completed',
  uuid: '0190a3c2-7b1e-7cc0-8f00-0123456789ab',
  timestamp: new Date('2024-05-01T14:00:01.000Z'),
  properties: { total: 42.5, items: [{ sku: 'A-1', qty: 2 }], $set: { last_order: 'o-1' }, $session_id: 'sess-1' },
  groups: { company: 'ph-acme' },
});
client.identify({
  distinctId: 'ph-user-1',
  properties: { $set: { email: 'ada@example.com', plan: 'pro' }, $set_once: { first_seen: '2024-05-01' } },
});
client.alias({ distinctId: 'ph-user-1', alias: 'ph-anon-1' });
client.groupIdentify({ groupType: 'company', groupKey: 'ph-acme', properties: { name: 'Acme', employees: 50 } });
client.capture({
  distinctId: 'ph-anon-1',
  event: '$pageview',
  timestamp: new Date('2024-05-01T14:00:05.000Z'),
  properties: {
    $current_url: 'https://shop.example/pricing?ref=ad',
    $pathname: '/pricing',
    $title: 'Pricing',
    $referrer: 'https://search.example/',
    $process_person_profile: false,
  },
});
client.capture({ distinctId: 'ph-user-1', event: '$screen', properties: { $screen_name: 'Home' } });

await client.shutdown(20000);
console.log(JSON.stringify({ sdk: 'posthog-node', requests }));
process.exit(failed || requests.some((r) => r.status !== 200) ? 1 : 0);
