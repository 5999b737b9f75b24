/** Corral's CNI layer: the public API. */
export {
  CniManager,
  LOOPBACK_NETWORK_NAME,
  LOOPBACK_IFNAME,
  ethName,
  type CniManagerOptions,
  type LoadStatus,
  type PodIdentity,
  type PodNetworkRequest,
  type PodNetworkResult,
  type PodAttachment,
  type PodTeardownInfo,
} from './cni.js';
export {
  bandwidthFromAnnotations,
  buildCapabilityArgs,
  parseQuantity,
  INGRESS_BANDWIDTH_ANNOTATION,
  EGRESS_BANDWIDTH_ANNOTATION,
  DEFAULT_BANDWIDTH_BURST,
  POD_ANNOTATIONS_CAPABILITY,
  type BandwidthLimits,
  type CapabilityInputs,
  type DnsCapability,
  type IpRange,
  type PortMapping,
} from './capabilities.js';
export { CniError, CniPluginError, CniMultiError, CNI_ERROR_CODES, type CniVerb } from './errors.js';
export {
  parseResult,
  resultToVersion,
  selectPodIps,
  stripPrefix,
  type CniResult,
  type CniInterface,
  type CniIpConfig,
  type CniRoute,
  type CniDns,
  type PodIpPreference,
} from './result.js';
export { loadConfDir, parseConfList, parseSingleConf, type NetworkConfigList, type ConfDirLoad, type PluginConf } from './conf.js';
export {
  listCachedAttachments,
  listCachedContainerIds,
  readCachedAttachment,
  cacheFilePath,
  type CachedAttachment,
} from './cache.js';
export { SUPPORTED_CNI_VERSIONS, CURRENT_CNI_VERSION } from './version.js';
