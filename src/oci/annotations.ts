/** The CRI annotations Corral puts on every container's config.json (sandbox and application alike). */

export const Annotations = {
  containerType: 'io.kubernetes.cri.container-type',
  sandboxId: 'io.kubernetes.cri.sandbox-id',
  sandboxName: 'io.kubernetes.cri.sandbox-name',
  sandboxNamespace: 'io.kubernetes.cri.sandbox-namespace',
  sandboxUid: 'io.kubernetes.cri.sandbox-uid',
  sandboxLogDirectory: 'io.kubernetes.cri.sandbox-log-directory',
  imageName: 'io.kubernetes.cri.image-name',
  containerName: 'io.kubernetes.cri.container-name',
  podSandboxImageName: 'io.kubernetes.cri.podsandbox.image-name',
  crioContainerType: 'io.kubernetes.cri-o.ContainerType',
  crioSandboxId: 'io.kubernetes.cri-o.SandboxID',
} as const;

export const CONTAINER_TYPE_SANDBOX = 'sandbox';
