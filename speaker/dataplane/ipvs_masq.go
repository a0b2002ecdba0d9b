package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Why an nftables rule: IPVS's "masquerade" forwarding rewrites only the
// destination of a connection. A destination on another node (its
// NodePort) must also see this node as the source, or it would reply to the
// client directly and the client would drop a reply from an address it never
// talked to. kube-proxy marks such packets in iptables' nat PREROUTING and
// masquerades them in POSTROUTING; nftables has no match on IPVS itself
// (iptables' `-m ipvs` has no nft equivalent), so this rule matches what
// IPVS leaves behind in conntrack instead:
//
//	meta l4proto . ct original daddr . ct original proto-dst . daddr . th dport @masq masquerade
//
// With net.ipv4.vs.conntrack=1 IPVS keeps a conntrack entry for each
// connection and sends its rewritten packets through LOCAL_OUT and
// POSTROUTING, where the conntrack entry's original direction still holds
// the VIP and port while the packet already carries the destination. So the
// rule masquerades exactly the connections of one virtual service to one
// destination marked Masquerade, and never other traffic to the same
// endpoint (pod to pod). The source NAT binding for such a connection is
// still free at POSTROUTING because IPVS steals the packet in LOCAL_IN
// before the nat hook there runs.
//
// The rule lives in a table of its own per family (ip and ip6 herald-ipvs:
// a ct address is 4 or 16 bytes according to the table's family), which is
// replaced whole on a full sync and updated element by element after.

const (
	masqSetName   = "masq"
	masqChainName = "postrouting"
)

// masquerader programs the masquerade rule's elements.
type masquerader interface {
	// Replace recreates the tables with exactly elems, in one transaction.
	Replace(elems []masqElem) error
	// Update adds and removes elements, in one transaction.
	Update(add, del []masqElem) error
	// Cleanup deletes the tables.
	Cleanup() error
}

// nftMasq is the masquerader on the kernel, through nf_tables netlink (no
// nft binary needed).
type nftMasq struct {
	table string
}

func (m *nftMasq) tables() [2]*nftables.Table {
	return [2]*nftables.Table{
		{Name: m.table, Family: nftables.TableFamilyIPv4},
		{Name: m.table, Family: nftables.TableFamilyIPv6},
	}
}

func (m *nftMasq) set(t *nftables.Table) *nftables.Set {
	addr := nftables.TypeIPAddr
	if t.Family == nftables.TableFamilyIPv6 {
		addr = nftables.TypeIP6Addr
	}
	return &nftables.Set{
		Table: t, Name: masqSetName, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeInetProto, addr, nftables.TypeInetService, addr, nftables.TypeInetService),
	}
}

func (m *nftMasq) Replace(elems []masqElem) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	for _, t := range m.tables() {
		// Adding before deleting makes the delete succeed whether or not a
		// previous run left the table; the batch is one transaction.
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
		set := m.set(t)
		if err := c.AddSet(set, setElements(elems, t.Family)); err != nil {
			return fmt.Errorf("nftables table %s: set %s: %w", m.table, masqSetName, err)
		}
		ch := c.AddChain(&nftables.Chain{
			Name: masqChainName, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
		})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: masqRule(t.Family, set)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table %s: replace: %w", m.table, err)
	}
	return nil
}

func (m *nftMasq) Update(add, del []masqElem) error {
	if len(add) == 0 && len(del) == 0 {
		return nil
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	for _, t := range m.tables() {
		set := m.set(t)
		if e := setElements(del, t.Family); len(e) > 0 {
			if err := c.SetDeleteElements(set, e); err != nil {
				return err
			}
		}
		if e := setElements(add, t.Family); len(e) > 0 {
			if err := c.SetAddElements(set, e); err != nil {
				return err
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table %s: update set %s: %w", m.table, masqSetName, err)
	}
	return nil
}

func (m *nftMasq) Cleanup() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	for _, t := range m.tables() {
		c.AddTable(t)
		c.DelTable(t)
	}
	if err := c.Flush(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("nftables table %s: delete: %w", m.table, err)
	}
	return nil
}

// The registers of the concatenation: nftables' 32-bit registers start at
// 8 (NFT_REG32_00) and every part of a concatenation starts on a register of
// its own.
const reg32 = 8

// ctDirOriginal is IP_CT_DIR_ORIGINAL: the client's direction of a
// connection.
const ctDirOriginal = 0

// masqRule is the rule's expressions for the table's family.
func masqRule(fam nftables.TableFamily, set *nftables.Set) []expr.Any {
	addrOff, addrLen := uint32(16), uint32(4) // IPv4 header: daddr
	if fam == nftables.TableFamilyIPv6 {
		addrOff, addrLen = 24, 16
	}
	regs := addrLen / 4
	r := uint32(reg32)
	next := func(n uint32) uint32 { cur := r; r += n; return cur }
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: next(1)},
		&expr.Ct{Key: expr.CtKeyDST, Direction: ctDirOriginal, Register: next(regs)},
		&expr.Ct{Key: expr.CtKeyPROTODST, Direction: ctDirOriginal, Register: next(1)},
		&expr.Payload{Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: addrLen, DestRegister: next(regs)},
		&expr.Payload{Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2, DestRegister: next(1)},
		&expr.Lookup{SourceRegister: reg32, SetName: set.Name, SetID: set.ID},
		&expr.Masq{},
	}
}

// setElements encodes the elements of the family's table: each part of
// the concatenated key padded to 4 bytes, as the registers hold it.
func setElements(elems []masqElem, fam nftables.TableFamily) []nftables.SetElement {
	var out []nftables.SetElement
	for _, e := range elems {
		if e.VIP.Addr().Is4() != (fam == nftables.TableFamilyIPv4) {
			continue
		}
		out = append(out, nftables.SetElement{Key: masqKey(e)})
	}
	return out
}

func masqKey(e masqElem) []byte {
	var k []byte
	k = append(k, byte(ipvsProtocol(e.Protocol)), 0, 0, 0)
	k = append(k, e.VIP.Addr().AsSlice()...)
	k = binary.BigEndian.AppendUint16(k, e.VIP.Port())
	k = append(k, 0, 0)
	k = append(k, e.Dest.Addr().AsSlice()...)
	k = binary.BigEndian.AppendUint16(k, e.Dest.Port())
	return append(k, 0, 0)
}

// diffMasq splits the change from old to new (both sorted) into elements
// to add and to remove.
func diffMasq(old, new []masqElem) (add, del []masqElem) {
	i, j := 0, 0
	for i < len(old) || j < len(new) {
		switch {
		case j == len(new) || (i < len(old) && compareMasq(old[i], new[j]) < 0):
			del = append(del, old[i])
			i++
		case i == len(old) || compareMasq(old[i], new[j]) > 0:
			add = append(add, new[j])
			j++
		default:
			i++
			j++
		}
	}
	return add, del
}
