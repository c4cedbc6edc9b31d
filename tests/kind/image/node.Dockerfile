# The kind node base of tests/kind: kind's own base image, rebuilt on a
# Debian rootfs made here (mmdebstrap), with containerd, runc, the CNI
# plugins and Kubernetes built from Go modules. tests/kind/build-image
# prepares the context and the ROOTFS image; nothing is pulled.
ARG ROOTFS
FROM ${ROOTFS}
COPY kind-base-files/usr/local/bin/ /usr/local/bin/
COPY kind-base-files/kind/ /kind/
COPY kind-base-files/etc/ /etc/
COPY bin/containerd bin/containerd-shim-runc-v2 bin/ctr /usr/local/bin/
COPY bin/runc /usr/local/sbin/runc
COPY cni/ /opt/cni/bin/
COPY kube/ /usr/bin/
COPY cri-base.json /etc/containerd/cri-base.json
COPY 10-meridian.conflist /etc/cni/net.d/10-meridian.conflist
COPY default-storage.yaml /kind/manifests/default-storage.yaml
COPY version /kind/version
RUN chmod 0755 /usr/local/bin/* /kind/bin/* /usr/local/sbin/runc /opt/cni/bin/* /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl \
    && find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete \
    && rm -f /lib/systemd/system/multi-user.target.wants/* \
    && rm -f /etc/systemd/system/*.wants/* \
    && rm -f /lib/systemd/system/local-fs.target.wants/* \
    && rm -f /lib/systemd/system/sockets.target.wants/*udev* \
    && rm -f /lib/systemd/system/sockets.target.wants/*initctl* \
    && rm -f /lib/systemd/system/basic.target.wants/* \
    && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \
    && ln -sf /usr/lib/systemd/systemd /sbin/init \
    && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \
    && systemctl mask systemd-binfmt.service \
    && mkdir -p /etc/kubernetes/manifests \
    && sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' /etc/containerd/config.toml \
    && grep -q 'restrict_oom_score_adj = true' /etc/containerd/config.toml
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
