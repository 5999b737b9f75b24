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
export const CONTAINER_TYPE_CONTAINER = 'container';

/** The pod and image a container belongs to; a sandbox adds its log directory, an app container its name. */
export type CriAnnotationsInput = {
  sandboxId: string;
  sandboxName: string;
  sandboxNamespace: string;
  sandboxUid: string;
  imageName: string;
} & (
  | { containerType: typeof CONTAINER_TYPE_SANDBOX; sandboxLogDirectory: string }
  | { containerType: typeof CONTAINER_TYPE_CONTAINER; containerName: string }
);

/**
 * The annotations of a config.json: `extra` (the CRI's annotations, passed through) under
 * Corral's own keys, which win, so a client cannot pass its container off as another's.
 */
export function criAnnotations(extra: Record<string, string>, input: CriAnnotationsInput): Record<string, string> {
  return {
    ...extra,
    [Annotations.containerType]: input.containerType,
    [Annotations.sandboxId]: input.sandboxId,
    [Annotations.sandboxName]: input.sandboxName,
    [Annotations.sandboxNamespace]: input.sandboxNamespace,
    [Annotations.sandboxUid]: input.sandboxUid,
    ...(input.containerType === CONTAINER_TYPE_SANDBOX ? { [Annotations.sandboxLogDirectory]: input.sandboxLogDirectory } : {}),
    ...(input.containerType === CONTAINER_TYPE_CONTAINER ? { [Annotations.containerName]: input.containerName } : {}),
    [Annotations.imageName]: input.imageName,
    ...(input.containerType === CONTAINER_TYPE_SANDBOX ? { [Annotations.podSandboxImageName]: input.imageName } : {}),
    [Annotations.crioContainerType]: input.containerType,
    [Annotations.crioSandboxId]: input.sandboxId,
  };
}
