// Sends every Segment call type through the real @segment/analytics-node SDK to Switchyard.
// Usage: node segment.mjs <switchyard base URL> <write key>
// Driven by tests/tests/sdk_compat.rs, which checks what lands in the file sink.
import { Analytics } from '@segment/analytics-node';

const [url, writeKey] = process.argv.slice(2);
if (!url || !writeKey) {
  console.error('usage: node segment.mjs <url> <write key>');
  process.exit(2);
}

const analytics = new Analytics({ writeKey, host: url, maxEventsInBatch: 4, flushInterval: 100 });
let failed = false;
analytics.on('error', (error) => {
  failed = true;
  console.error('analytics-node error:', error?.reason?.message ?? error?.code ?? error);
});

const at = (second) => new Date(`2024-05-01T12:00:0${second}.000Z`);

analytics.track({
  userId: 'seg-user-1',
  event: 'Order Completed',
  messageId: 'seg-track-1',
  timestamp: at(1),
  properties: { total: 42.5, currency: 'EUR', items: [{ sku: 'A-1', qty: 2 }] },
  context: { page: { path: '/checkout' }, locale: 'de-DE' },
});
analytics.identify({
  userId: 'seg-user-1',
  anonymousId: 'seg-anon-1',
  messageId: 'seg-identify-1',
  timestamp: at(2),
  traits: { plan: 'pro', name: 'Ada Lovelace', logins: 7 },
});
analytics.page({
  anonymousId: 'seg-anon-1',
  name: 'Pricing',
  messageId: 'seg-page-1',
  timestamp: at(3),
  properties: { path: '/pricing', title: 'Pricing - Shop', url: 'https://shop.example/pricing' },
});
analytics.screen({
  userId: 'seg-user-1',
  name: 'Settings',
  messageId: 'seg-screen-1',
  timestamp: at(4),
  properties: { section: 'billing' },
});
analytics.group({
  userId: 'seg-user-1',
  groupId: 'seg-acme',
  messageId: 'seg-group-1',
  timestamp: at(5),
  traits: { name: 'Acme Inc', employees: 50 },
});
analytics.alias({
  userId: 'seg-user-1',
  previousId: 'seg-anon-1',
  messageId: 'seg-alias-1',
  timestamp: at(6),
});

await analytics.closeAndFlush({ timeout: 20000 });
console.log(JSON.stringify({ sdk: '@segment/analytics-node', sent: 6 }));
process.exit(failed ? 1 : 0);
