import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toCamelCaseFields } from '../../src/cli/json-input.js';

test('crictl-style snake_case fields become camelCase; map keys stay as written', () => {
  const input = {
    metadata: { name: 'nginx', namespace: 'default', uid: 'u', attempt: 1 },
    log_directory: '/tmp',
    dns_config: { servers: ['1.1.1.1'] },
    port_mappings: [{ container_port: 80, host_port: 8080 }],
    labels: { 'app_name': 'x', 'k8s.io/some_key': 'v' },
    annotations: { 'io.corral.sandbox.network-order': 'start-first' },
    linux: { cgroup_parent: '/x', sysctls: { 'net.ipv4.ip_forward': '1' }, security_context: { namespace_options: { network: 2 } } },
  };
  assert.deepEqual(toCamelCaseFields(input), {
    metadata: { name: 'nginx', namespace: 'default', uid: 'u', attempt: 1 },
    logDirectory: '/tmp',
    dnsConfig: { servers: ['1.1.1.1'] },
    portMappings: [{ containerPort: 80, hostPort: 8080 }],
    labels: { 'app_name': 'x', 'k8s.io/some_key': 'v' },
    annotations: { 'io.corral.sandbox.network-order': 'start-first' },
    linux: { cgroupParent: '/x', sysctls: { 'net.ipv4.ip_forward': '1' }, securityContext: { namespaceOptions: { network: 2 } } },
  });
});
